"""A session's network: a namespace of its own (bubblewrap ``--unshare-net`` + pasta) through
the real hub. The kernel reaches the hub and the outside, not this machine's services."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from apps.builds.tests.helpers import tcp_listener
from apps.netns import listening_in_namespace, local_networks, sandbox_resolv_conf
from apps.sessions.backends.local.spawner import BinderySpawner
from apps.sessions.hub import HubClient
from apps.sessions.tests.conftest import (
    Hub,
    Running,
    cgroups_writable,
    network_isolation_available,
    server_processes,
    wait_for,
)
from apps.sessions.tests.jupyter import run_code
from apps.testing import available, requires

requires_isolation = requires(
    network_isolation_available(),
    reason="needs root, bubblewrap, pasta (passt), nsenter, ip and an IPv4 default route",
)
PROBE_TIMEOUT = 1.5
PROBE = """
import concurrent.futures, json, socket

def probe(target):
    host, port = target
    try:
        with socket.create_connection((host, port), timeout={timeout}):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {{exc}}"

targets = {targets!r}
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""


def _probe_here(targets: list[tuple[str, int]]) -> list[str]:
    """The same probe, run on the host."""
    code = PROBE.format(timeout=PROBE_TIMEOUT, targets=targets)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return list(json.loads(done.stdout))


def _probe_in_kernel(base: str, token: str, targets: list[tuple[str, int]]) -> list[str]:
    status, output = run_code(base, token, PROBE.format(timeout=PROBE_TIMEOUT, targets=targets))
    assert status == "ok", output
    return list(json.loads(output))


def _host_addresses() -> list[tuple[str, str]]:
    """``(address, interface)`` for every address of this host but the loopback's, as
    ``ip`` reports them (independently of the spawner's own reading of /proc)."""
    found = []
    for link in json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True,
                                          check=True, text=True).stdout):  # fmt: skip
        for info in link.get("addr_info", []):
            if not ipaddress.ip_address(info["local"]).is_loopback:
                found.append((info["local"], link["ifname"]))
    return found


def _session(hub: Hub, hub_client: HubClient, running: Running) -> tuple[str, str]:
    launch = running.launch
    token, _ = hub_client.create_server_token(launch.user, launch.server, expires_in=600)
    return f"{hub.public_url}/user/{launch.user}/{launch.server}", token


# --- a running session ----------------------------------------------------------------------


@requires_isolation
def test_the_session_has_a_network_namespace_of_its_own(running_server: Running) -> None:
    (pid,) = server_processes(running_server.launch.user, running_server.launch.server)
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    messages = [str(e.get("message", "")) for e in running_server.events]
    assert any(m.startswith("Starting the server (sandboxed, isolated network;") for m in messages)
    assert not any("host's network" in m for m in messages)


@requires_isolation
def test_the_kernel_cannot_reach_services_on_this_machine(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    base, token = _session(hub, hub_client, running_server)
    hub_api_port = urlsplit(hub.api_url).port
    public_port = urlsplit(hub.public_url).port
    assert hub_api_port and public_port
    ipv6 = Path("/proc/net/if_inet6").exists()
    with contextlib.ExitStack() as stack:
        loopback = stack.enter_context(tcp_listener(socket.AF_INET, "127.0.0.1"))
        anywhere = stack.enter_context(tcp_listener(socket.AF_INET, "0.0.0.0"))
        ours: list[tuple[str, int]] = [("127.0.0.1", loopback)]
        if ipv6:
            anywhere6 = stack.enter_context(tcp_listener(socket.AF_INET6, "::"))
            ours.append(("::1", stack.enter_context(tcp_listener(socket.AF_INET6, "::1"))))
        for address, interface in _host_addresses():
            if ":" not in address:
                ours.append((address, anywhere))
            elif ipaddress.ip_address(address).is_link_local:
                ours.append((f"{address}%{interface}", anywhere6))
            else:
                ours.append((address, anywhere6))
        # what the test opened: reachable from the host itself
        assert _probe_here(ours) == ["connected"] * len(ours), ours
        services = [("127.0.0.1", 5432), ("127.0.0.1", 6379), *([("::1", 6379)] if ipv6 else [])]
        services += [("127.0.0.1", public_port), ("127.0.0.1", public_port + 1)]  # the proxy
        on_host = dict(zip(services, _probe_here(services), strict=True))
        targets = [("127.0.0.1", hub_api_port), *ours, *services]
        seen = dict(zip(targets, _probe_in_kernel(base, token, targets), strict=True))
    # the hub's API is forwarded (the control: the probe does connect where it may) ...
    assert seen.pop(("127.0.0.1", hub_api_port)) == "connected"
    # ... and nothing else on this machine is, listening on the host or not
    reached = {target: result for target, result in seen.items() if result == "connected"}
    assert reached == {}, f"reached from the session: {reached}; on the host: {on_host}"
    assert on_host[("127.0.0.1", public_port)] == "connected"


@requires_isolation
def test_the_server_still_works_through_the_hub(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    base, token = _session(hub, hub_client, running_server)
    response = requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"})
    assert response.status_code == 200, response.text
    # the server reported its activity to the hub's API from inside its namespace
    wait_for(
        lambda: "200 POST /hub/api/users/alice/activity" in hub.log(), 30, "an activity report"
    )
    # and the kernel authenticates against the hub's API with the server's own token
    code = (
        "import json, os, urllib.request\n"
        "request = urllib.request.Request(os.environ['JUPYTERHUB_API_URL'] + '/user', headers="
        "{'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']})\n"
        "with urllib.request.urlopen(request, timeout=10) as reply:\n"
        "    print(reply.status, json.load(reply)['name'])\n"
    )
    status, output = run_code(base, token, code)
    assert status == "ok", output
    assert output.split() == ["200", "alice"]


@requires_isolation
def test_outbound_traffic_is_routed_through_pasta(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    base, token = _session(hub, hub_client, running_server)
    code = (
        "import subprocess\n"
        "print(open('/proc/net/route').read())\n"
        "print(subprocess.run(['ip', 'route'], capture_output=True, text=True).stdout)\n"
    )
    status, output = run_code(base, token, code)
    assert status == "ok", output
    table, _, routes = output.partition("\n\n")
    default = [line.split() for line in table.splitlines()[1:] if line.split()[1] == "00000000"]
    assert default, output  # a default route, to pasta's tap device ...
    interface, gateway = default[0][0], default[0][2]
    assert interface != "lo"
    host = [line.split() for line in Path("/proc/net/route").read_text().splitlines()[1:]]
    # ... via the host's gateway, as pasta copies it (and --no-map-gw keeps it the real one)
    assert gateway in {fields[2] for fields in host if fields[1] == "00000000"}
    prohibited = {line.split()[1] for line in routes.splitlines() if line.startswith("prohibit ")}
    for address, _ in _host_addresses():
        if ":" not in address:
            assert address in prohibited, routes


@requires_isolation
def test_pasta_lives_and_dies_with_its_server(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    hub_client.ensure_user("oscar")

    def start(server: str) -> tuple[int, int]:
        hub_client.start_server("oscar", server, make_launch("oscar", server).user_options)
        events = list(hub_client.iter_progress("oscar", server))
        assert events[-1].get("ready"), events
        (pasta,) = _pastas(hub, server)
        return pasta, server_processes("oscar", server)[0]

    pasta, pid = start("net-1")
    port = _forwarded_port(pasta)
    arguments = Path(f"/proc/{pasta}/cmdline").read_bytes().decode().split("\0")
    # (this pasta maps its gateway address to the host's loopback without --no-map-gw)
    assert {"--no-map-gw", "--ipv4-only"} <= set(arguments)
    # pasta counts against the session and goes with its cgroups
    if available(cgroups_writable(), "cgroup v1 memory/pids not writable"):
        assert _cgroup(pasta, "memory") == _cgroup(pid, "memory")
    if not hub_client.stop_server("oscar", "net-1"):
        wait_for(lambda: hub_client.server_status("oscar", "net-1") == "stopped", 30, "stop")
    wait_for(lambda: not Path(f"/proc/{pasta}").exists(), 10, "pasta to exit")
    with socket.socket() as sock:  # nothing listens on the server's port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (connections in TIME_WAIT)
        sock.bind(("127.0.0.1", port))

    pasta, pid = start("net-2")
    os.kill(pid, 9)
    wait_for(lambda: hub_client.server_status("oscar", "net-2") == "stopped", 30, "the hub")
    wait_for(lambda: not Path(f"/proc/{pasta}").exists(), 10, "pasta to exit")
    hub_client.stop_server("oscar", "net-2")


def _pastas(hub: Hub, server: str) -> list[int]:
    """The pasta processes the hub started (its children) for ``server``: pasta's last
    argument is a process of the network namespace it serves (the namespace's holder), the
    one the server's processes run in."""
    namespaces = set()
    for entry in os.scandir("/proc"):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            if f"JUPYTERHUB_SERVER_NAME={server}".encode() in environ:
                namespaces.add(os.readlink(f"/proc/{entry.name}/ns/net"))
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != hub.process.pid:
                continue
            if not os.path.basename(os.readlink(f"/proc/{entry.name}/exe")).startswith("passt"):
                continue
            target = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")[-2].decode()
            if os.readlink(f"/proc/{int(target)}/ns/net") in namespaces:
                found.append(int(entry.name))
    return found


def _forwarded_port(pasta: int) -> int:
    args = Path(f"/proc/{pasta}/cmdline").read_bytes().decode().split("\0")
    return int(args[args.index("--tcp-ports") + 1].rsplit("/", 1)[1])


def _cgroup(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return ""


# --- choosing the network -------------------------------------------------------------------


def test_isolated_refuses_to_start_without_pasta() -> None:
    spawner = BinderySpawner(network="isolated", pasta_command="/nonexistent/pasta")
    with pytest.raises(RuntimeError, match=r"isolated network is required.*passt"):
        spawner._network_plan(sandboxed=True)
    with pytest.raises(RuntimeError, match="no bubblewrap sandbox"):
        BinderySpawner(network="isolated")._network_plan(sandboxed=False)


def test_auto_falls_back_to_the_hosts_network_and_says_why() -> None:
    spawner = BinderySpawner(network="auto", pasta_command="/nonexistent/pasta")
    assert spawner._network_plan(sandboxed=True) == ({}, "/nonexistent/pasta (package passt) "
                                                         "not installed")  # fmt: skip
    assert BinderySpawner()._network_plan(sandboxed=False) == ({}, "there is no bubblewrap sandbox")
    shared = BinderySpawner(network="shared")._network_plan(sandboxed=True)
    assert shared == ({}, "BINDERY_SESSION_NETWORK is shared")


@requires_isolation
def test_auto_isolates_where_pasta_is_installed() -> None:
    tools, reason = BinderySpawner()._network_plan(sandboxed=True)
    assert set(tools) == {"pasta", "nsenter", "ip"} and reason == ""


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.77.0.0/24 2 0 2
        |-- 10.77.0.2
           /32 host LOCAL
        |-- 10.77.0.3
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 172.31.0.1
        /32 host LOCAL
     |-- 192.168.9.0
        /24 host LOCAL
        |-- 192.168.9.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.77.0.2
        /32 host LOCAL
"""
IPV6_ROUTE = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000001 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo\n"
    "fd000000000000000000000000000002 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0\n"
    "fe8000000000000000fc00fffe000001 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0\n"
)


def test_the_hosts_own_addresses_are_read_from_proc() -> None:
    # secondary and AnyIP (local prefix) addresses included; loopback and link-local not
    assert local_networks(FIB_TRIE, IPV6_ROUTE) == [
        "10.77.0.2/32",
        "10.77.0.3/32",
        "172.31.0.1/32",
        "192.168.9.0/24",
        "fd00::2/128",
    ]


def test_a_loopback_resolver_is_reached_through_pastas_dns_forwarding() -> None:
    stub = "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
    assert sandbox_resolv_conf(stub, "169.254.1.1") == (
        "nameserver 169.254.1.1\n# systemd-resolved\noptions edns0 trust-ad\nsearch lan\n"
    )
    assert sandbox_resolv_conf("nameserver 10.0.0.2\nnameserver 127.0.0.1\n") is None
    assert sandbox_resolv_conf("") is None


def test_listening_sockets_are_found_in_a_processs_namespace() -> None:
    with tcp_listener(socket.AF_INET, "127.0.0.1") as port:
        assert listening_in_namespace(os.getpid(), port)
    assert not listening_in_namespace(os.getpid(), port)


@requires_isolation
def test_a_port_taken_before_pasta_binds_it_is_traded_for_another() -> None:
    """Servers starting at once: the port picked for one (free then) is taken by the time its
    pasta binds it. The spawner picks another; a real pasta on a really taken port."""
    tools, _ = BinderySpawner()._network_plan(sandboxed=True)
    spawner = BinderySpawner(ip="127.0.0.1")
    spawner.hub = SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api")
    spawner.user = SimpleNamespace(name="port-taker")
    with tcp_listener(socket.AF_INET, "127.0.0.1") as taken:
        spawner.port = taken
        namespace = spawner._create_namespace(tools)
        try:
            assert spawner.port != taken  # another one, which its pasta holds
            assert namespace.pasta.process.poll() is None
        finally:
            namespace.close()
