"""A network namespace of its own for a bubblewrap sandbox: outbound IPv4 through pasta, and
nothing of this machine.

Used by the hub's spawner (sessions) and by the local builder (uv and postBuild). Imports
neither Django nor ``portal``: the hub imports this module too.

How a sandbox is isolated:

1. bubblewrap runs with ``--unshare-net`` (``--unshare-all`` without ``--share-net``) and
   the options of :class:`SandboxPipes`: it reports its first process's pid on the
   ``--info-fd`` pipe as soon as the namespaces exist, then waits on ``--block-fd``.
2. :func:`prohibit_host_networks` enters that network namespace (``nsenter`` + ``ip -batch``)
   before pasta creates its interface: IPv6 off on new interfaces, every address of this
   host a ``prohibit`` route (pasta's NAT would otherwise connect to them on the host), and
   the policy rules of :func:`sandbox_routes`: no link-local (the cloud metadata address),
   shared, private, multicast or reserved IPv4 range (:data:`DEFAULT_BLOCKED`, plus what the
   caller adds: the database's and Redis's hosts) but what the operator allows, and the
   host's resolvers on port 53. The namespace belongs to root's user namespace: a sandbox
   entering it as an unprivileged uid cannot change its routes or rules.
3. :func:`start_pasta` attaches pasta (Debian package ``passt``) to the namespace:
   ``--config-net`` copies the host's IPv4 address and routes, ``--no-map-gw`` keeps the
   gateway the real one (this pasta maps it to the host's loopback otherwise),
   ``--ipv4-only``, no port forwarded in either direction but those asked for (pasta's
   default, ``auto``, would forward every port bound on the host's loopback), UDP never.
   pasta dies with the thread that started it (``PR_SET_PDEATHSIG``); :meth:`Pasta.stop`
   ends it.
4. Writing to ``--block-fd`` lets the sandbox run its command.

:func:`isolate` does 2 and 3 and waits until pasta has configured the namespace (the hub's
spawner does the same steps itself, to wait without blocking its event loop).
:class:`Namespace` does 1 to 3 once for sandboxes started later inside it (the builder: one
namespace per build, entered by each of its commands). :func:`find_tools` says whether all
that is possible here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The address a sandbox's resolver uses when the host's resolver listens on its loopback
# (systemd-resolved's 127.0.0.53): pasta maps port 53 there to the host's resolver.
DNS_FORWARD = "169.254.1.1"
_RTF_LOCAL = 0x80000000  # /proc/net/ipv6_route: a local route (an address of this host)
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_READY_POLL = 0.002  # seconds between looks for pasta's pid file
# IPv4 ranges a sandbox does not reach unless the operator allows them: nothing there is
# the public internet, and some of it is the cloud's or the site's own.
DEFAULT_BLOCKED = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT, some clouds' internals)
    "169.254.0.0/16",  # link-local: the cloud metadata service at 169.254.169.254
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.168.0.0/16",  # private
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
# (The documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and the
# benchmarking 198.18.0.0/15 are not blocked: some sandboxed machines, this project's CI
# included, put their own network or their package mirrors there.)
RULE_PRIORITY = 1000  # the first policy rule's; after "lookup local" (0), before main (32766)
_GATEWAY_PROTOCOLS = ("tcp", "udp", "icmp")  # all that pasta forwards


# --- this host ------------------------------------------------------------------------------


def local_networks(fib_trie: str, ipv6_route: str) -> list[str]:
    """The addresses (and AnyIP prefixes) this host accepts as its own, loopback and IPv6
    link-local excepted, from the texts of ``/proc/net/fib_trie`` (``/N host LOCAL``
    entries) and ``/proc/net/ipv6_route`` (routes flagged RTF_LOCAL)."""
    found: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    address = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            address = text[4:]
        elif text.startswith("/") and text.split()[-1] == "LOCAL" and address:
            found.add(ipaddress.ip_network(f"{address}{text.split()[0]}", strict=False))
    for line in ipv6_route.splitlines():
        fields = line.split()
        if len(fields) >= 9 and int(fields[8], 16) & _RTF_LOCAL:
            net = ipaddress.IPv6Network((bytes.fromhex(fields[0]), int(fields[1], 16)), False)
            found.add(net)
    kept = [n for n in found if not (n.is_loopback or n.network_address.is_link_local)]
    return [str(n) for n in sorted(kept, key=lambda n: (n.version, n))]


def host_local_networks() -> list[str]:
    """:func:`local_networks` of this host (of the calling process's network namespace)."""
    texts = []
    for name in ("/proc/net/fib_trie", "/proc/net/ipv6_route"):
        try:
            texts.append(Path(name).read_text())
        except OSError:  # no IPv6
            texts.append("")
    return local_networks(*texts)


def has_ipv4_default_route() -> bool:
    """Whether this host has an IPv4 default route (pasta derives the namespace's address and
    routes from it, and refuses to start without one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                return True
    return False


def ipv4_default_gateways(route: str) -> list[str]:
    """The gateways of the IPv4 default routes in the text of ``/proc/net/route``."""
    found = []
    for line in route.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            raw = int(fields[2], 16)  # in the host's byte order
            gateway = str(ipaddress.IPv4Address(struct.pack("=I", raw)))
            if raw and gateway not in found:
                found.append(gateway)
    return found


def host_default_gateways() -> list[str]:
    """:func:`ipv4_default_gateways` of this host: pasta (``--no-map-gw``) gives the namespace
    the same."""
    try:
        return ipv4_default_gateways(Path("/proc/net/route").read_text())
    except OSError:
        return []


def resolv_conf_servers(text: str) -> list[str]:
    """The IPv4 ``nameserver`` addresses of a ``resolv.conf`` text, in order."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            if address.version == 4 and str(address) not in found:
                found.append(str(address))
    return found


def host_resolvers() -> list[str]:
    """:func:`resolv_conf_servers` of this host's ``/etc/resolv.conf``."""
    try:
        return resolv_conf_servers(Path("/etc/resolv.conf").read_text())
    except OSError:
        return []


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def sandbox_resolv_conf(text: str, forward: str = DNS_FORWARD) -> str | None:
    """The sandbox's ``/etc/resolv.conf`` when the host's first resolver is on its IPv4
    loopback (systemd-resolved's 127.0.0.53, unreachable from the namespace): ``forward``
    (pasta maps its port 53 to that resolver), then the other lines without loopback
    resolvers. None when the host's file works as it is."""
    lines = text.splitlines()

    def server(line: str) -> str:
        words = line.split()
        return words[1] if len(words) > 1 and words[0] == "nameserver" else ""

    servers = [server(line) for line in lines if server(line)]
    if not servers or not is_loopback(servers[0]) or ":" in servers[0]:
        return None
    kept = [line for line in lines if not (server(line) and is_loopback(server(line)))]
    return "\n".join([f"nameserver {forward}", *kept]) + "\n"


def host_sandbox_resolv_conf(forward: str = DNS_FORWARD) -> str | None:
    """:func:`sandbox_resolv_conf` of this host's ``/etc/resolv.conf``."""
    try:
        return sandbox_resolv_conf(Path("/etc/resolv.conf").read_text(), forward)
    except OSError:
        return None


def listening_in_namespace(pid: int, port: int) -> bool:
    """Whether a TCP socket in ``pid``'s network namespace listens on ``port``."""
    suffix = f":{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as fh:
                for line in fh:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(suffix):
                        return True
        except OSError:
            continue
    return False


# --- what isolation needs -------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """The absolute paths of the commands isolation runs."""

    pasta: str
    nsenter: str
    ip: str


def find_tools(
    pasta_command: str = "pasta", *, who: str = "this process"
) -> tuple[Tools | None, str]:
    """``(tools, "")`` when a sandbox can get a namespace of its own here, else ``(None,
    why not)``: pasta, nsenter and ip installed, ``who`` (for the message) running as root
    (configuring another process's namespace needs it), an IPv4 default route. bubblewrap is
    the caller's to check."""
    wanted = {
        "pasta": (pasta_command, "passt"),
        "nsenter": ("nsenter", "util-linux"),
        "ip": ("ip", "iproute2"),
    }
    found: dict[str, str] = {}
    missing = []
    search = os.pathsep.join([os.environ.get("PATH", ""), SYSTEM_PATH])  # ip: sbin
    for name, (command, package) in wanted.items():
        path = shutil.which(command, path=search)
        if path is None:
            missing.append(f"{command} (package {package})")
        else:
            found[name] = path
    if missing:
        return None, f"{', '.join(missing)} not installed"
    if os.geteuid() != 0:
        return None, f"{who} does not run as root, which configuring the namespace needs"
    if not has_ipv4_default_route():
        return None, "this host has no IPv4 default route (pasta needs one)"
    return Tools(**found), ""


# --- the bubblewrap side ----------------------------------------------------------------------


def read_child_pid(fd: int) -> int:
    """The sandbox's first process (host pid), from bubblewrap's ``--info-fd`` JSON, which
    bubblewrap writes as soon as the namespaces exist (it closes the fd when it exits)."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(data)["child-pid"])
    raise RuntimeError("bubblewrap exited before it created the sandbox")


class SandboxPipes:
    """The pipes between a caller and a bubblewrap that gets its network from :func:`isolate`.

    ``args`` go on bubblewrap's command line (before ``--``), ``child_fds`` in its
    ``pass_fds``; after starting it, :meth:`started` closes the sandbox's ends,
    :meth:`child_pid` reads its pid and :meth:`release` lets it run its command. With
    ``resolv`` (the text of :func:`sandbox_resolv_conf`) the sandbox's ``resolv_path`` shows
    it. :meth:`close` closes whatever is still open (idempotent)."""

    def __init__(self, resolv: str | None = None, resolv_path: str = "/etc/resolv.conf") -> None:
        self._open: set[int] = set()
        try:
            self._info, info_child = self._pipe()
            block_child, self._block = self._pipe()
            self.args = ["--info-fd", str(info_child), "--block-fd", str(block_child)]
            self.child_fds: tuple[int, ...] = (info_child, block_child)
            if resolv is not None:
                data_child, data = self._pipe()
                os.write(data, resolv.encode())  # a few hundred bytes: the pipe holds them
                self._close(data)
                self.args += ["--ro-bind-data", str(data_child), resolv_path]
                self.child_fds += (data_child,)
        except BaseException:
            self.close()
            raise

    def _pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self._open |= {read, write}
        return read, write

    def _close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)

    def started(self) -> None:
        """bubblewrap holds its ends now."""
        self._close(*self.child_fds)

    def child_pid(self) -> int:
        return read_child_pid(self._info)

    def release(self) -> None:
        """Let the sandbox run its command."""
        os.write(self._block, b"1")
        self._close(self._block)

    def close(self) -> None:
        self._close(*list(self._open))


# --- the namespace side -----------------------------------------------------------------------


def _ipv4_networks(values: Sequence[str]) -> list[ipaddress.IPv4Network]:
    """IPv4 networks of ``values`` (CIDRs or addresses; host bits ignored), IPv6 ones left
    out (a sandbox's namespace has no IPv6 but its loopback); raises ValueError."""
    found: list[ipaddress.IPv4Network] = []
    for value in values:
        net = ipaddress.ip_network(value.strip(), strict=False)
        if isinstance(net, ipaddress.IPv4Network) and net not in found:
            found.append(net)
    return found


def sandbox_routes(
    host_local: Sequence[str],
    blocked: Sequence[str] = DEFAULT_BLOCKED,
    allowed: Sequence[str] = (),
    resolvers: Sequence[str] = (),
    gateways: Sequence[str] = (),
) -> list[str]:
    """The ``ip -batch`` lines that give a sandbox's network namespace its policy, to run
    before pasta configures it. Pure: the caller says what this host has.

    - ``host_local`` (:func:`host_local_networks`): ``prohibit`` routes in the main table,
      IPv4 and IPv6, which no rule below lifts (each rule's ``lookup main`` finds them).
    - ``resolvers`` (the host's IPv4 nameservers, and :data:`DNS_FORWARD` where pasta
      forwards DNS): reachable on port 53 (UDP and TCP) only, whatever range they are in.
    - ``allowed`` and ``blocked`` (CIDRs): rules ordered most specific first, an allowed
      network before a blocked one of the same size, so ``10.1.0.0/16`` allowed lifts that
      part of a blocked ``10.0.0.0/8`` but not a blocked ``10.1.0.7/32`` inside it (the
      database's host stays blocked when its range is allowed), unless that is named too.
      An allowed network lifts only blocked ones at least as large (``0.0.0.0/0`` lifts
      nothing): name the ranges to lift.
    - ``gateways`` (the host's IPv4 default gateways, which pasta copies): one the policy
      blocks stays looked up in the main table for the kernel's check of the default
      route's next hop (without it pasta's default route is refused and nothing works) while
      TCP, UDP and ICMP to it are prohibited.

    Rules get priorities from :data:`RULE_PRIORITY` on. IPv6 entries of ``blocked``,
    ``allowed``, ``resolvers`` and ``gateways`` are ignored. Raises ValueError for a value
    that is not an address or network.
    """
    lines = [f"route add prohibit {ipaddress.ip_network(n, strict=False)}\n" for n in host_local]
    rules: list[str] = []
    for resolver in _ipv4_networks(resolvers):
        if resolver.prefixlen == 32 and not resolver.is_loopback:
            rules += [f"to {resolver} ipproto {p} dport 53 lookup main" for p in ("udp", "tcp")]
    ranges = sorted(
        [(net, True) for net in _ipv4_networks(allowed)]
        + [(net, False) for net in _ipv4_networks(blocked)],
        key=lambda item: (-item[0].prefixlen, not item[1]),
    )
    for gateway in _ipv4_networks(gateways):
        verdict = next((ok for net, ok in ranges if gateway.subnet_of(net)), True)
        if gateway.prefixlen == 32 and not verdict:
            rules += [f"to {gateway} ipproto {p} prohibit" for p in _GATEWAY_PROTOCOLS]
            rules.append(f"to {gateway} lookup main")
    rules += [f"to {net} {'lookup main' if ok else 'prohibit'}" for net, ok in ranges]
    return lines + [f"rule add prio {RULE_PRIORITY + i} {rule}\n" for i, rule in enumerate(rules)]


def prohibit_host_networks(
    tools: Tools,
    pid: int,
    *,
    blocked: Sequence[str] = DEFAULT_BLOCKED,
    allowed: Sequence[str] = (),
    dns_forward: str | None = DNS_FORWARD,
) -> list[str]:
    """In ``pid``'s network namespace, before pasta creates its interface: no IPv6 on new
    interfaces, and the policy of :func:`sandbox_routes` for this host: every address of
    this host a ``prohibit`` route (the addresses pasta copies into the namespace, and the
    loopback, are the namespace's own anyway), ``blocked`` but ``allowed`` networks
    prohibited, the host's resolvers and ``dns_forward`` (pasta's DNS address, when it is
    given one) reachable on port 53. Returns the prohibited host networks; raises
    RuntimeError, and ValueError for a bad network in ``blocked`` or ``allowed``."""
    networks = host_local_networks()
    resolvers = host_resolvers() + ([dns_forward] if dns_forward else [])
    script = "".join(sandbox_routes(networks, blocked, allowed, resolvers, host_default_gateways()))
    shell = (
        "set -e; f=/proc/sys/net/ipv6/conf/default/disable_ipv6; "
        'if [ -e $f ]; then echo 1 > $f; fi; exec "$0" -batch -'
    )
    namespace = [tools.nsenter, f"--net=/proc/{pid}/ns/net", "--"]
    result = subprocess.run(
        [*namespace, "/bin/sh", "-c", shell, tools.ip],
        input=script.encode(),
        capture_output=True,
        timeout=30,
        check=False,
        env={"PATH": SYSTEM_PATH},
    )
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"Could not keep the sandbox off this host's addresses: {error}")
    return networks


class Pasta:
    """A pasta attached to one namespace. :meth:`stop` ends it (idempotent)."""

    def __init__(self, process: subprocess.Popen[bytes], directory: str, prohibited: int) -> None:
        self.process = process
        self.prohibited = prohibited  # how many host networks are routed prohibit inside
        self._directory = directory
        self._ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready(self) -> bool:
        """Whether pasta has configured the namespace (it writes its pid file then); raises
        RuntimeError when it exited before."""
        if self._ready:
            return True
        if os.path.exists(os.path.join(self._directory, "pid")):
            self._ready = True
            shutil.rmtree(self._directory, ignore_errors=True)  # pasta keeps its open log
            return True
        status = self.process.poll()
        if status is not None:
            detail = ""
            with contextlib.suppress(OSError):
                detail = Path(self._directory, "log").read_text(errors="replace").strip()
            raise RuntimeError(
                f"pasta exited ({status}) before the network was ready"
                + (f": {detail[-500:]}" if detail else "")
            )
        return False

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pasta did not set the network up within {timeout:g}s")
            time.sleep(_READY_POLL)

    async def wait_ready_async(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pasta did not set the network up within {timeout:g}s")
            await asyncio.sleep(0.005)

    def stop(self, *, wait: bool = True) -> None:
        """SIGKILL pasta. ``wait``: until it has exited; else it is reaped by a thread
        (pasta takes ~30 ms to exit, the kernel removing its tap device: a builder running
        many short sandboxed commands does not wait for that)."""
        if self.process.poll() is None:
            self.process.kill()
        shutil.rmtree(self._directory, ignore_errors=True)
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        elif self.process.returncode is None:
            threading.Thread(target=self.process.wait, name="pasta-reaper", daemon=True).start()


def start_pasta(
    tools: Tools,
    pid: int,
    *,
    inbound: str = "none",
    to_host: Sequence[int] = (),
    dns_forward: str | None = None,
    output: int | None = None,
    cgroup_procs: Sequence[str] = (),
    prohibited: int = 0,
) -> Pasta:
    """Start pasta on ``pid``'s network namespace; does not wait (see :meth:`Pasta.ready`).

    ``inbound``: pasta's ``--tcp-ports`` (connections to the host forwarded into the
    namespace: ``"none"``, ``"8888"``, ``"127.0.0.1/8888"``). ``to_host``: ports of the
    host's loopback the namespace reaches on its own loopback (``--tcp-ns``). ``dns_forward``:
    the address whose port 53 pasta sends to the host's resolver. ``output``: where pasta's
    messages go (default: a file read when it fails). ``cgroup_procs``: ``cgroup.procs``
    files pasta joins (its memory counts against them).

    pasta dies with the calling thread (``PR_SET_PDEATHSIG`` follows the forking thread):
    call this from the thread that lives as long as the sandbox.
    """
    directory = tempfile.mkdtemp(prefix="bindery-pasta-")
    command = [tools.pasta, "--runas", "0", "--foreground", "--quiet", "--config-net"]
    command += ["--ipv4-only", "--no-map-gw", "--tcp-ports", inbound, "--udp-ports", "none"]
    command += ["--tcp-ns", ",".join(str(p) for p in to_host) or "none", "--udp-ns", "none"]
    command += ["--pid", os.path.join(directory, "pid")]
    if dns_forward is not None:
        command += ["--dns-forward", dns_forward]
    parent = os.getpid()
    preexec = _child_setup(parent, list(cgroup_procs))
    log_fd = -1
    try:
        if output is None:
            log_fd = os.open(os.path.join(directory, "log"), os.O_WRONLY | os.O_CREAT, 0o600)
        process = subprocess.Popen(
            [*command, str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd if output is None else output,
            stderr=log_fd if output is None else output,
            env={"PATH": SYSTEM_PATH},
            preexec_fn=preexec,
            start_new_session=True,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        if log_fd >= 0:
            os.close(log_fd)
    return Pasta(process, directory, prohibited)


def _child_setup(parent: int, procs: list[str]) -> Callable[[], None]:
    def preexec() -> None:  # in the child: die with the caller's thread, join the cgroups
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody would stop us
            os._exit(1)
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)

    return preexec


def isolate(
    tools: Tools,
    pid: int,
    *,
    inbound: str = "none",
    to_host: Sequence[int] = (),
    dns_forward: str | None = None,
    timeout: float = 30,
    blocked: Sequence[str] = DEFAULT_BLOCKED,
    allowed: Sequence[str] = (),
    cgroup_procs: Sequence[str] = (),
) -> Pasta:
    """Give ``pid``'s network namespace (a bubblewrap sandbox's, blocked on ``--block-fd``)
    outbound IPv4 through pasta and nothing of this host, nor of ``blocked`` networks but
    ``allowed`` ones (:func:`prohibit_host_networks`); returns once pasta has configured
    it. The caller stops the returned :class:`Pasta` when the sandbox is done. Raises
    RuntimeError or TimeoutError (pasta is stopped then), ValueError for a bad network."""
    prohibited = prohibit_host_networks(
        tools, pid, blocked=blocked, allowed=allowed, dns_forward=dns_forward
    )
    pasta = start_pasta(
        tools, pid, inbound=inbound, to_host=to_host, dns_forward=dns_forward,
        prohibited=len(prohibited), cgroup_procs=cgroup_procs,
    )  # fmt: skip
    try:
        pasta.wait_ready(timeout)
    except BaseException:
        pasta.stop()
        raise
    return pasta


class Namespace:
    """A network namespace of its own, isolated once (:func:`isolate`) and entered by any
    number of later sandboxes: for a builder whose commands run one after another.

    A bubblewrap that never runs its command (blocked on ``--block-fd``) holds the namespace;
    this object keeps a descriptor of it, and :attr:`enter` (``nsenter`` on that descriptor,
    never on a pid that could be reused) prefixes each sandbox's command, which must be given
    :attr:`pass_fds` and run bubblewrap with ``--share-net``: it shares the namespace it
    starts in. The holder and pasta die with the creating thread (``--die-with-parent``,
    ``PR_SET_PDEATHSIG``); :meth:`close` ends both.
    """

    def __init__(
        self,
        holder: subprocess.Popen[bytes],
        pipes: SandboxPipes,
        fd: int,
        pasta: Pasta,
        nsenter: str,
        pid: int = 0,
    ) -> None:
        self._holder = holder
        self.pid = pid  # a process in the namespace (the holder's), for /proc/<pid>/net
        self._pipes = pipes
        self.fd = fd
        self.pasta = pasta
        self.enter = [nsenter, f"--net=/proc/self/fd/{fd}", "--"]
        self.pass_fds = (fd,)

    @classmethod
    def create(
        cls,
        tools: Tools,
        *,
        bwrap: str = "bwrap",
        to_host: Sequence[int] = (),
        dns_forward: str | None = None,
        timeout: float = 30,
        blocked: Sequence[str] = DEFAULT_BLOCKED,
        allowed: Sequence[str] = (),
        inbound: str = "none",
        cgroup_procs: Sequence[str] = (),
    ) -> Namespace:
        """``blocked``, ``allowed``, ``inbound`` (ports of the host forwarded in: a
        session's server) and ``cgroup_procs`` (pasta's): as :func:`isolate`. Raises
        RuntimeError, OSError, ValueError or subprocess.SubprocessError (nothing is left)."""
        pipes = SandboxPipes()
        holder: subprocess.Popen[bytes] | None = None
        fd = -1
        try:
            holder = subprocess.Popen(
                [bwrap, "--die-with-parent", "--unshare-all", "--ro-bind", "/", "/",
                 *pipes.args, "--", "/bin/true"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=pipes.child_fds, start_new_session=True,
            )  # fmt: skip
            pipes.started()
            try:
                pid = pipes.child_pid()
            except RuntimeError as exc:
                holder.wait(10)
                error = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
                raise RuntimeError(f"{exc}: {error.strip()[-500:]}") from None
            # (the holder cannot exit before it is released or killed: its pid is its own)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            pasta = isolate(
                tools, pid, to_host=to_host, dns_forward=dns_forward, timeout=timeout,
                blocked=blocked, allowed=allowed, inbound=inbound, cgroup_procs=cgroup_procs,
            )  # fmt: skip
        except BaseException:
            if holder is not None:
                _end(holder)
            pipes.close()
            if fd >= 0:
                os.close(fd)
            raise
        return cls(holder, pipes, fd, pasta, tools.nsenter, pid)

    def close(self) -> None:
        """End the holder and pasta (pasta is reaped by a thread); idempotent."""
        if self.fd < 0:
            return
        _end(self._holder)
        self._pipes.close()
        os.close(self.fd)
        self.fd = -1
        self.pasta.stop(wait=False)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    if process.stderr is not None:
        process.stderr.close()


__all__ = [
    "DEFAULT_BLOCKED",
    "DNS_FORWARD",
    "RULE_PRIORITY",
    "SYSTEM_PATH",
    "Namespace",
    "Pasta",
    "SandboxPipes",
    "Tools",
    "find_tools",
    "has_ipv4_default_route",
    "host_default_gateways",
    "host_local_networks",
    "host_resolvers",
    "host_sandbox_resolv_conf",
    "ipv4_default_gateways",
    "is_loopback",
    "isolate",
    "listening_in_namespace",
    "local_networks",
    "prohibit_host_networks",
    "read_child_pid",
    "resolv_conf_servers",
    "sandbox_resolv_conf",
    "sandbox_routes",
    "start_pasta",
]
