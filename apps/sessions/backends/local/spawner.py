"""The spawner the hub runs for the local backend.

The portal (``apps.sessions.backends.local.LocalSessions``) builds a
:class:`~apps.sessions.backends.local.options.LaunchOptions`, signs it
(``apps.sessions.contract``) and sends the result as the named server's ``user_options``.
The hub (a separate process, without Django) runs :class:`BinderySpawner`, which accepts
only options signed with the same key, every path inside the portal's directories, and
then starts ``jupyterhub-singleuser`` from the session's environment in a working copy of
the checkout, with the volumes at ``persistent/``, inside bubblewrap where installed, under
cgroup v1 memory/pids limits (``RLIMIT_AS`` where cgroups are not writable), in a network
namespace of its own where pasta is installed (see :meth:`BinderySpawner._network_plan` and
``apps.netns``, which the local builder shares).

Nothing here imports Django or ``portal`` (whose ``__init__`` loads the Celery app), nor does
``apps.netns``: the hub imports this module by its dotted path, and the generated config
(``portal/hubconfig.py`` with :meth:`LocalSessions.hub_config`) passes everything the spawner
needs as traitlets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import posixpath
import shutil
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import maybe_future, random_port
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Float, Integer, List, Unicode, default

from apps import cgroups, netns
from apps import sandbox as sbx  # not `sandbox`: the spawner has a trait of that name
from apps.sessions import contract
from apps.sessions.backends.local.options import LaunchOptions
from apps.sessions.contract import InvalidLaunchOptions, verify_user_options

# Network namespaces are made on these threads, which never exit (pasta dies with the thread
# that started it: not asyncio.to_thread's, whose threads come and go), so that making one
# (~0.13 s: bubblewrap, pasta, routes) does not hold up the hub's event loop and every other
# launch with it.
_NAMESPACE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bindery-netns")


# pasta's words when the server's port was taken between picking and binding it
_PORT_TAKEN = "Failed to bind any port"
_PORT_ATTEMPTS = 3


class StartSlots:
    """At most ``limit`` servers starting at once (``BinderySpawner.starts_at_once``), the
    others waiting their turn, first come first served: a server start is CPU (the
    single-user server's imports, ~2 s of a core), and twenty started together on two cores
    each take as long as all twenty (~35 s), where a few at a time are each up in seconds
    and the last no later. One per hub (its event loop), made on first use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self._slots = asyncio.Semaphore(limit)

    def busy(self) -> bool:
        return self._slots.locked()

    async def take(self) -> None:
        self.waiting += 1
        try:
            await self._slots.acquire()  # FIFO; a cancelled wait takes no slot
        finally:
            self.waiting -= 1

    def give_back(self) -> None:
        self._slots.release()


_START_SLOTS: dict[int, StartSlots] = {}


def start_slots(limit: int) -> StartSlots | None:
    """The hub's slots for ``limit`` starts at once; None when ``limit`` is 0 (no bound)."""
    if limit <= 0:
        return None
    if limit not in _START_SLOTS:
        _START_SLOTS[limit] = StartSlots(limit)
    return _START_SLOTS[limit]


MOUNT_ROOT = contract.MOUNT_ROOT
BINDER_ENV = contract.BINDER_ENV
SYSTEM_PATH = netns.SYSTEM_PATH
EGRESS_ENV = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
    "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


# --- Path rules -----------------------------------------------------------------------------


def _inside(path: str, root: str, what: str) -> str:
    """``path`` with symlinks resolved, if strictly inside ``root``; else InvalidLaunchOptions."""
    if not root:
        raise InvalidLaunchOptions(f"the hub is not configured with a directory for {what}")
    if not os.path.isabs(path):
        raise InvalidLaunchOptions(f"{what} must be an absolute path")
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if real == real_root or os.path.commonpath([real, real_root]) != real_root:
        raise InvalidLaunchOptions(f"{what} is outside the portal's directory for it")
    return real


def _relative(path: str, what: str) -> str:
    """A normalised relative path that cannot climb out of its base."""
    norm = posixpath.normpath(path)
    if path.startswith("/") or norm == "." or norm.split("/")[0] == "..":
        raise InvalidLaunchOptions(f"{what} must be a relative path inside the working copy")
    return norm


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(entry.name))
    return sorted(kids)


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _main_process(pid: int) -> int:
    """The first process below ``pid`` that is not bubblewrap (bwrap → bwrap init → server)."""
    current = pid
    for _ in range(4):
        if os.path.basename(_exe(current)) != "bwrap":
            return current
        kids = _children(current)
        if not kids:
            return current
        current = kids[0]
    return current


def _open_dir(base: str, parts: list[str], *, replace_files: bool) -> int:
    """A descriptor for ``base/parts...``, creating missing directories and never following
    a symlink below ``base``: a symlink in the way is replaced by a directory (no data is
    lost), a file only when ``replace_files`` (the working copy belongs to the session), else
    it is an error."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            try:
                mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
            else:
                if not stat.S_ISDIR(mode):
                    if not (stat.S_ISLNK(mode) or replace_files):
                        raise RuntimeError(f"A file named {part} is where a volume is mounted")
                    os.unlink(part, dir_fd=fd)
                    os.mkdir(part, 0o755, dir_fd=fd)
            # O_NOFOLLOW: fails if the directory was swapped for a symlink meanwhile
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- Pipes ----------------------------------------------------------------------------------


class _Pipes:
    """The pipe ends start() opens; whatever is still open at the end is closed."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.open |= {read, write}
        return read, write

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)

    def hand_over(self, fd: int) -> int:
        """``fd``, now owned (and closed) by someone else."""
        self.open.discard(fd)
        return fd

    def close_all(self) -> None:
        self.close(*list(self.open))


# --- The spawner ----------------------------------------------------------------------------


def _apply_signed_options(spawner: BinderySpawner, user_options: Any) -> None:
    """JupyterHub's ``apply_user_options`` hook (an exception here becomes HTTP 400)."""
    try:
        spawner.launch_options = spawner.validate_options(user_options)
    except InvalidLaunchOptions as exc:
        spawner.log.warning("Refusing launch options for %s: %s", spawner._log_name, exc)
        raise web.HTTPError(400, f"Invalid launch options: {exc}") from exc
    options = spawner.launch_options
    spawner.mem_limit = options.memory_bytes
    spawner.cpu_limit = options.cpu
    spawner.default_url = options.default_url


LEAN_HOST = str(Path(__file__).with_name("lean_singleuser.py"))
LEAN_INSIDE = "/etc/bindery-singleuser.py"  # a file of the sandbox's own read-only /etc


@functools.cache
def _lean_source() -> str:
    return Path(LEAN_HOST).read_text()


class BinderySpawner(LocalProcessSpawner):
    """Runs a session's ``jupyterhub-singleuser`` from the portal-built environment.

    Like JupyterHub's SimpleLocalProcessSpawner it needs no system users: servers run as the
    hub's user (root here, hence ``--allow-root``).
    """

    signing_key_hex = Unicode("", config=True, help="The launch options' HMAC key, in hex.")
    envs_dir = Unicode("", config=True, help="Environments must be inside this directory.")
    checkouts_dir = Unicode("", config=True, help="Checkouts must be inside this directory.")
    sessions_dir = Unicode("", config=True, help="Working copies are created inside this.")
    volumes_dir = Unicode("", config=True, help="Volumes must be inside this directory.")
    sandbox = CaselessStrEnum(
        ["on", "off", "auto", "bwrap", "none"],
        default_value="on",
        config=True,
        help="on (auto, bwrap): servers run in the sandbox (apps.sandbox) as their user's "
        "unprivileged uid, and do not start where that is impossible; off (none): as root, "
        "without a sandbox.",
    )
    bwrap_command = Unicode("bwrap", config=True)
    uid_base = Integer(1_000_000, config=True, help="apps.sandbox.Ids: sandbox uids' base.")
    cgroup_root = Unicode("/sys/fs/cgroup", config=True)
    cgroup_parent = Unicode("bindery", config=True, help="Per-server cgroups go under this.")
    readiness_interval = Float(0.1, config=True, help="Seconds between port checks in start().")
    lean_start = Bool(
        True,
        config=True,
        help="Start jupyterhub-singleuser through lean_singleuser.py, without the hub's ORM, "
        "SQLAlchemy, Alembic and handlers (falls back to the plain import by itself where a "
        "JupyterHub release needs more); False: run the environment's jupyterhub-singleuser.",
    )
    starts_at_once = Integer(
        0,
        config=True,
        help="Servers starting at once, from their working copy to their port open (StartSlots);"
        " the others wait their turn. 0: no bound.",
    )
    network = CaselessStrEnum(
        ["auto", "isolated", "shared"],
        default_value="auto",
        config=True,
        help="auto: a network namespace of its own (bubblewrap + pasta) when possible, else "
        "the host's network with a warning; isolated: required; shared: the host's network.",
    )
    pasta_command = Unicode("pasta", config=True, help="pasta, from the passt package.")
    dns_forward = Unicode(
        netns.DNS_FORWARD,
        config=True,
        help="The resolver address sessions use when the host's resolver is on its loopback.",
    )

    blocked_networks = List(
        Unicode(),
        list(netns.DEFAULT_BLOCKED),
        config=True,
        help="Networks sessions never reach (apps.netns.prohibit_host_networks).",
    )
    allowed_networks = List(Unicode(), config=True, help="Lifted from blocked_networks.")

    launch_options = AnyTrait(None, allow_none=True)
    cgroup_dirs = List(Unicode())
    links = List(Unicode())
    server_pid = Integer(0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events: list[dict[str, Any]] = []
        self._events_changed = asyncio.Event()
        self._output: deque[str] = deque(maxlen=20)
        self._pump: threading.Thread | None = None
        self._cgroups: cgroups.CgroupSet | None = None
        self._namespace: netns.Namespace | None = None
        self._resolv: str | None = None

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[BinderySpawner, Any], None]:
        return _apply_signed_options

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        # Not the hub's PATH, VIRTUAL_ENV or PYTHONPATH: the server runs from its own env. The
        # machine's CA bundles and proxies: `pip install` in a notebook reaches the index as
        # the host's own clients do.
        return ["LANG", "LC_ALL", "TZ", *EGRESS_ENV]

    # -- validation --------------------------------------------------------------------------

    def validate_options(self, user_options: Any, *, now: float | None = None) -> LaunchOptions:
        """Verified, path-checked launch options; raises InvalidLaunchOptions."""
        key = bytes.fromhex(self.signing_key_hex) if self.signing_key_hex else b""
        options = LaunchOptions.from_dict(verify_user_options(user_options, key, now=now))
        if (options.hub_user, options.server_name) != (self.user.name, self.name):
            raise InvalidLaunchOptions("the launch options were signed for another server")
        env = _inside(options.env_path, self.envs_dir, "the environment")
        if not os.access(os.path.join(env, "bin", "jupyterhub-singleuser"), os.X_OK):
            raise InvalidLaunchOptions("the environment has no jupyterhub-singleuser")
        checkout = _inside(options.checkout_path, self.checkouts_dir, "the checkout")
        if not os.path.isdir(checkout):
            raise InvalidLaunchOptions("the checkout does not exist")
        workdir = _inside(options.workdir, self.sessions_dir, "the working copy")
        volumes: list[tuple[str, str]] = []
        for host_dir, mount in options.volumes:
            host = _inside(host_dir, self.volumes_dir, "a volume")
            if not os.path.isdir(host):
                raise InvalidLaunchOptions("a volume directory does not exist")
            rel = _relative(mount, "a volume's mount point")
            if rel != MOUNT_ROOT and not rel.startswith(MOUNT_ROOT + "/"):
                raise InvalidLaunchOptions(f"volumes are mounted under {MOUNT_ROOT}/")
            volumes.append((host, rel))
        mounts = [m for _, m in volumes]
        if len(set(mounts)) != len(mounts):
            raise InvalidLaunchOptions("two volumes share a mount point")
        if self._sandboxed():
            ids = sbx.Ids(self.uid_base)
            if options.uid not in ids.session_range or options.gid != options.uid:
                raise InvalidLaunchOptions("a session runs as a session uid of its own")
            if options.team_gid and options.team_gid not in ids.team_range:
                raise InvalidLaunchOptions("team_gid is not a team's group")
            if any(m != MOUNT_ROOT for m in mounts) and not options.team_gid:
                raise InvalidLaunchOptions("a team volume needs the team's group")
        start = _relative(options.start_script, "the start script") if options.start_script else ""
        if options.default_url and not options.default_url.startswith("/"):
            raise InvalidLaunchOptions("default_url must start with /")
        return LaunchOptions(
            **{
                **asdict(options),
                "env_path": env,
                "checkout_path": checkout,
                "workdir": workdir,
                # parents before children, so a team volume lands inside the user's volume
                "volumes": tuple(sorted(volumes, key=lambda v: v[1].count("/"))),
                "start_script": start,
            }
        )

    # -- state -------------------------------------------------------------------------------

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.cgroup_dirs = state.get("cgroup_dirs", [])
        self.links = state.get("links", [])
        self.server_pid = state.get("server_pid", 0)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.cgroup_dirs:
            state["cgroup_dirs"] = list(self.cgroup_dirs)
        if self.links:
            state["links"] = list(self.links)
        if self.server_pid:
            state["server_pid"] = self.server_pid
        return state

    def clear_state(self) -> None:
        # cgroup_dirs and links stay until stop() has removed them: the hub's poll clears
        # state as soon as the process is gone, before it calls stop().
        super().clear_state()
        self.server_pid = 0

    # -- environment -------------------------------------------------------------------------

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        # repo2docker's runtime contract (docs/architecture.md): USER is the image's user, as
        # the sandbox's passwd names it; unsandboxed the server is root and keeps the hub name.
        env["USER"] = "jovyan" if self._sandboxed() else self.user.name
        env["SHELL"] = "/bin/bash"
        if self.launch_options is not None:
            env["HOME"] = self.launch_options.workdir  # as on mybinder: home is the repo
        return env

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        options: LaunchOptions | None = self.launch_options
        if options is None:
            return env
        # repo2docker's runtime contract (docs/architecture.md, "repo2docker's runtime
        # contract"): its images put ~/.local/bin and $REPO_DIR/.local/bin before the
        # environment's bin (here the same directory: the home is the repository), name the
        # environment NB_PYTHON_PREFIX/KERNEL_PYTHON_PREFIX, and npm's global prefix is one
        # the build could write (here the environment, where postBuild's `npm install -g`
        # went). The local builder's postBuild sees the same variables (builds/backends/local.py).
        local_bins = dict.fromkeys([f"{env['HOME']}/.local/bin", f"{options.workdir}/.local/bin"])
        env["PATH"] = ":".join([*local_bins, f"{options.env_path}/bin", SYSTEM_PATH])
        env["REPO_DIR"] = options.workdir
        for name in ("VIRTUAL_ENV", "NB_PYTHON_PREFIX", "KERNEL_PYTHON_PREFIX",
                     "NPM_CONFIG_PREFIX"):  # fmt: skip
            env[name] = options.env_path
        env["NB_USER"] = "jovyan"
        env["NB_UID"] = str(options.uid if self._sandboxed() else os.getuid())
        env["PYTHONUNBUFFERED"] = "1"
        # repo2docker's en_US.UTF-8 is not generated on these machines; C.UTF-8 always is
        env.setdefault("LANG", "C.UTF-8")
        env.setdefault("LANGUAGE", env["LANG"])
        env.setdefault("LC_ALL", env["LANG"])
        if options.start_script:
            env["R2D_ENTRYPOINT"] = os.path.join(options.workdir, options.start_script)
        for name in BINDER_ENV:
            value = getattr(options, name)
            if value:
                env[name.upper()] = value
        return env

    def get_args(self) -> list[str]:
        args = ["--allow-root"] if os.geteuid() == 0 else []
        return [*args, *self.args]

    # -- progress ----------------------------------------------------------------------------

    def _event(self, progress: int, message: str) -> None:
        self._events.append({"progress": progress, "message": message})
        self._events_changed.set()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            self._events_changed.clear()
            await self._events_changed.wait()

    # -- start -------------------------------------------------------------------------------

    def _sandboxed(self) -> bool:
        return sbx.normalise_mode(self.sandbox) == "on"

    def _use_sandbox(self) -> str | None:
        """bubblewrap's path, or None when the sandbox is off; raises
        ``sandbox.SandboxUnavailable`` (the start fails with its message) when it is on and
        this machine cannot sandbox."""
        if not sbx.require(self.sandbox, self.bwrap_command):
            return None
        return shutil.which(self.bwrap_command) or self.bwrap_command

    def _network_plan(self, sandboxed: bool) -> tuple[dict[str, str], str]:
        """How the session reaches the network: ``(tools, "")`` for a namespace of its own
        (``tools``: the paths of pasta, nsenter and ip), ``({}, why)`` for the host's.

        Isolated, the server's namespace (bubblewrap ``--unshare-net``) is joined by pasta,
        which gives it outbound IPv4 NAT, forwards the server's port from the host's loopback
        and the hub API's port to the host's; every address of this host is a ``prohibit``
        route inside, and IPv6 is off but for the loopback (this pasta connects the namespace
        to the host's own link-local address, which no route can stop). Raises RuntimeError
        when ``network`` is ``isolated`` and that is impossible.
        """
        if self.network == "shared":
            return {}, "BINDERY_SESSION_NETWORK is shared"
        tools: dict[str, str] = {}
        if not sandboxed:
            problem = "there is no bubblewrap sandbox"
        else:
            found, problem = netns.find_tools(self.pasta_command, who="the hub")
            hub_host = urlsplit(self.hub.api_url).hostname if self.hub is not None else None
            if found is not None:
                tools = asdict(found)
                if hub_host and not (netns.is_loopback(hub_host) and ":" not in hub_host):
                    problem = f"servers reach the hub at {hub_host}, pasta forwards 127.0.0.1 only"
        if not problem:
            return tools, ""
        if self.network == "isolated":
            raise RuntimeError(f"An isolated network is required, but {problem}")
        return {}, problem

    def _prepare_working_copy(self, options: LaunchOptions, sandboxed: bool) -> list[str]:
        """Copy the checkout (modes kept, symlinks as symlinks) unless a copy exists, the
        session uid's when sandboxed; return the command prefix for the repo's start script
        (run by ``sandbox.RUN_SCRIPT`` inside the sandbox: root never opens it)."""
        workdir = Path(options.workdir)
        if not workdir.exists():
            workdir.parent.mkdir(parents=True, exist_ok=True)
            partial = workdir.with_name(f".{workdir.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(options.checkout_path, partial, symlinks=True)
            if sandboxed:
                sbx.chown_tree(partial, options.uid, options.gid)
                os.chmod(partial, 0o700)
            partial.rename(workdir)
        if not options.start_script:
            return []
        if sandboxed:
            return sbx.script_command(os.path.join(options.workdir, options.start_script))
        script = os.path.realpath(workdir / options.start_script)
        if os.path.commonpath([script, str(workdir)]) != str(workdir) or not os.path.isfile(script):
            raise RuntimeError(f"the start script {options.start_script} is not in the repository")
        # repo2docker semantics: `start` receives the server command and ends with exec "$@".
        return sbx.script_command(script)

    @staticmethod
    def _location(options: LaunchOptions, mount: str, upto: int) -> tuple[str, list[str]]:
        """``(base, parts)``: the host directory holding ``mount`` once the first ``upto``
        volumes are in place (the working copy or a volume), and the path below it."""
        best_mount, base = "", options.workdir
        for host, other in options.volumes[:upto]:
            if mount.startswith(other + "/") and len(other) > len(best_mount):
                best_mount, base = other, host
        rest = mount[len(best_mount) + 1 :] if best_mount else mount
        return base, rest.split("/")

    def _prepare_mounts(self, options: LaunchOptions, sandboxed: bool) -> None:
        """Create the mount points (sandbox) or link the volumes in (no sandbox).

        The host side never follows a symlink below the working copy or a volume: a repo or
        a user could otherwise point ``persistent`` or ``persistent/teams`` anywhere on the
        host, and this code runs as root.
        """
        for index, (host, mount) in enumerate(options.volumes):
            base, parts = self._location(options, mount, index)
            in_copy = base == options.workdir
            if sandboxed:
                os.close(_open_dir(base, parts, replace_files=in_copy))  # targets must exist
                self._own_volume(options, host, mount)
                continue
            # Without a mount namespace the volume is linked in; stop() removes the link.
            parent = _open_dir(base, parts[:-1], replace_files=in_copy)
            try:
                name = parts[-1]
                try:
                    found = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    found = 0
                if stat.S_ISLNK(found):
                    os.unlink(name, dir_fd=parent)
                elif stat.S_ISDIR(found) and not os.listdir(os.path.join(base, *parts)):
                    os.rmdir(name, dir_fd=parent)
                elif found and not in_copy:
                    self.log.warning("Not linking %s: %s exists in the volume", host, mount)
                    continue
                elif stat.S_ISDIR(found):
                    shutil.rmtree(os.path.join(base, *parts))
                elif found:
                    os.unlink(name, dir_fd=parent)
                os.symlink(host, name, target_is_directory=True, dir_fd=parent)
                self.links = [*self.links, os.path.join(base, *parts)]
            finally:
                os.close(parent)

    @staticmethod
    def _own_volume(options: LaunchOptions, host: str, mount: str) -> None:
        """A home volume is the session uid's alone (0700); a team volume root's with the
        team's group, setgid and group-writable (2770). What an older, root-run session left
        in it is handed over once (no symlink followed)."""
        team = mount != MOUNT_ROOT
        uid, gid, mode = (
            (0, options.team_gid, 0o2770) if team else (options.uid, options.uid, 0o700)
        )
        st = os.lstat(host)
        if (st.st_uid, st.st_gid) != (uid, gid):
            sbx.chown_tree(host, uid, gid, only_from=0)
            os.chown(host, uid, gid, follow_symlinks=False)
        if stat.S_IMODE(os.lstat(host).st_mode) != mode:
            os.chmod(host, mode)

    def _sandbox_spec(
        self, options: LaunchOptions, namespace: netns.Namespace | None = None
    ) -> sbx.Spec:
        """What the session sees (``apps.sandbox``): the system, its environment and the
        interpreter read-only, its working copy and volumes writable; in ``namespace``'s
        network (entered with nsenter), else the host's."""
        try:
            cfg = sbx.read_nofollow(options.env_path, "pyvenv.cfg", limit=65536).decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise RuntimeError(f"the environment's pyvenv.cfg cannot be read: {exc}") from exc
        home = next(
            (line.split("=", 1)[1].strip() for line in cfg.splitlines()
             if line.split("=", 1)[0].strip() == "home"), "",
        )  # fmt: skip
        read_only = [options.env_path]
        if home.startswith("/"):
            read_only.append(os.path.dirname(os.path.realpath(home)))
        groups = (options.team_gid,) if options.team_gid else ()
        return sbx.Spec(
            identity=sbx.Identity(
                uid=options.uid, gid=options.gid, groups=groups, name="jovyan",
                home=options.workdir,
            ),
            chdir=options.workdir,
            read_only=tuple(read_only),
            writable=(options.workdir,),
            binds=tuple((host, f"{options.workdir}/{mount}") for host, mount in options.volumes),
            files=(
                *((("/etc/resolv.conf", self._resolv),) if namespace and self._resolv else ()),
                *(((LEAN_INSIDE, _lean_source()),) if self.lean_start and not options.start_script
                  else ()),
            ),
            prefix=tuple(namespace.enter) if namespace is not None else (),
            prefix_fds=namespace.pass_fds if namespace is not None else (),
            clear_env=False,  # the hub's curated environment (get_env) goes through
        )  # fmt: skip

    def _server_command(
        self, env_path: str, *, sandboxed: bool, start_script: str = ""
    ) -> list[str]:
        """The server's command: the environment's Python running ``lean_singleuser.py``
        (shown read-only at ``LEAN_INSIDE`` in the sandbox), or its jupyterhub-singleuser:
        always where the repository has a start script, which receives the command as its
        arguments and may look at them (repo2docker's images give it jupyterhub-singleuser)."""
        if not self.lean_start or start_script:
            return [os.path.join(env_path, "bin", "jupyterhub-singleuser")]
        return [os.path.join(env_path, "bin", "python"), LEAN_INSIDE if sandboxed else LEAN_HOST]

    def _create_cgroups(self, options: LaunchOptions) -> str:
        """Create this server's cgroups (``apps.cgroups``: v1 or v2, ``RLIMIT_AS`` where no
        memory controller is writable); return what holds, in words."""
        self._cgroups = cgroups.create(
            cgroups.safe_name(self.user.name, self.name),
            cgroups.Limits(options.memory_bytes, options.max_processes, options.cpu or None),
            root=self.cgroup_root,
            parent=self.cgroup_parent,
        )
        self.cgroup_dirs = list(self._cgroups.dirs)
        for controller, why in self._cgroups.missing.items():
            self.log.warning("%s: no %s limit: %s", self._log_name, controller, why)
        return self._cgroups.describe()

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        join = self._cgroups.preexec_fn() if self._cgroups is not None else (lambda: None)

        def preexec() -> None:  # runs in the child, before exec: join the cgroups first
            os.umask(0o002)  # team volumes are shared through their group (setgid, 2770)
            join()

        return preexec

    def _pump_output(self, fd: int) -> None:
        """Forward the server's output to the hub log, keeping the tail for error messages."""
        token = self.api_token or ""
        with open(fd, "rb") as stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                if token:
                    line = line.replace(token, "[token]")
                self._output.append(line)
                self.log.info("[%s] %s", self._log_name, line)

    def _warn_shared_network(self, reason: str) -> None:
        """Say loudly, in the hub log and in the session's launch log, that the session
        shares the host's network."""
        message = (
            f"Warning: this session uses the host's network ({reason}): code in it can reach "
            "every service listening on this machine, its loopback included"
        )
        self.log.warning(
            "%s: %s. Install passt (pasta) and keep BINDERY_SESSION_NETWORK at auto or "
            "isolated to give each session a network of its own.",
            self._log_name,
            message,
        )
        self._event(25, message)

    async def start(self) -> tuple[str, int]:
        options: LaunchOptions | None = self.launch_options
        if options is None:
            raise web.HTTPError(400, "Servers start only with launch options from the portal")
        self._events.clear()
        self._output.clear()
        started = time.monotonic()
        fds = _Pipes()
        slots, holding = start_slots(self.starts_at_once), False
        try:
            if slots is not None:
                if slots.busy():
                    ahead = f" ({slots.waiting} waiting before yours)" if slots.waiting else ""
                    self._event(
                        5,
                        f"Other servers are starting on this machine{ahead}: yours starts "
                        "as soon as one of them is up",
                    )
                await slots.take()
                holding = True
            self._event(10, "Preparing your copy of the repository")
            bwrap = self._use_sandbox()
            tools, shared_because = self._network_plan(bwrap is not None)
            if bwrap and tools and not self.port:  # type: ignore[has-type]
                self.port = int(random_port())  # pasta forwards it before the server starts
            # the working copy and mounts, and the cgroups then the network namespace (pasta
            # joins the cgroups), at the same time and off the hub's event loop
            prefix, limits = await _both(
                self._copy_and_mount(options, bool(bwrap)),
                self._limits_and_network(options, tools if bwrap else {}),
            )
            sandbox_name = "sandboxed" if bwrap else "no sandbox"
            sandbox_name += ", isolated network" if tools else ", shared network"
            if shared_because:
                self._warn_shared_network(shared_because)
            self.log.info("Starting %s (%s; limits: %s)", self._log_name, sandbox_name, limits)
            self._event(30, f"Starting the server ({sandbox_name}; limits: {limits})")
            server = self._server_command(
                options.env_path, sandboxed=bool(bwrap), start_script=options.start_script
            )
            read_fd, write_fd = fds.pipe()
            child_fds: tuple[int, ...] = ()
            with contextlib.ExitStack() as stack:
                command: list[str] = []
                if bwrap:
                    spec = self._sandbox_spec(options, self._namespace)
                    prepared = stack.enter_context(sbx.prepared(spec, bwrap=bwrap))
                    command, child_fds = prepared.argv, prepared.pass_fds
                self.cmd = [*command, *prefix, *server]
                self.popen_kwargs = {
                    "cwd": options.workdir if not bwrap else "/",
                    "stdin": subprocess.DEVNULL,  # SIGINT must not wait on a tty prompt
                    "stdout": write_fd,
                    "stderr": write_fd,
                    "pass_fds": child_fds,
                }
                address: tuple[str, int] = await super().start()
            self._pump = threading.Thread(
                target=self._pump_output, args=(fds.hand_over(read_fd),), daemon=True
            )
            self._pump.start()
            fds.close(write_fd)  # the server holds it
            namespace_pid = self._namespace.pid if self._namespace is not None else 0
            await self._wait_until_listening(*address, namespace_pid=namespace_pid)
        except BaseException:
            await self._abort()
            raise
        finally:
            fds.close_all()
            if holding and slots is not None:
                slots.give_back()  # up, or failed: the next one in line starts
        self.server_pid = _main_process(self.pid)
        self.log.info("%s is listening after %.2fs", self._log_name, time.monotonic() - started)
        self._event(90, "The server is up; connecting to it")
        return address

    async def _copy_and_mount(self, options: LaunchOptions, sandboxed: bool) -> list[str]:
        prefix = await asyncio.to_thread(self._prepare_working_copy, options, sandboxed)
        await asyncio.to_thread(self._prepare_mounts, options, sandboxed)
        return prefix

    async def _limits_and_network(self, options: LaunchOptions, tools: dict[str, str]) -> str:
        limits = await asyncio.to_thread(self._create_cgroups, options)
        if tools:
            loop = asyncio.get_running_loop()
            self._namespace = await loop.run_in_executor(
                _NAMESPACE_THREADS, self._create_namespace, tools
            )
        return limits

    def _create_namespace(self, tools: dict[str, str]) -> netns.Namespace:
        """The session's network namespace (``apps.netns.Namespace``), held by root: outbound
        IPv4 through pasta, the server's port forwarded in from the host's loopback, the hub
        API's port out to the host's, every address of this host and of ``blocked_networks``
        a ``prohibit`` route; the server enters it with ``nsenter`` and cannot change it
        (it has no capabilities over a namespace root owns). Called on one of
        ``_NAMESPACE_THREADS``, which live as long as the hub: pasta dies with the thread
        that started it."""
        found = netns.Tools(**tools)
        resolv = netns.host_sandbox_resolv_conf(self.dns_forward)
        self._resolv = resolv
        api = urlsplit(self.hub.api_url)
        hub_port = api.port or (443 if api.scheme == "https" else 80)
        ip = self.ip or ""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            # the server's port on the host's loopback only (as a server outside a sandbox
            # binds)
            forward = str(self.port) if ip in ("", "0.0.0.0", "::") else f"{ip}/{self.port}"  # noqa: S104
            try:
                namespace = netns.Namespace.create(
                    found,
                    bwrap=self.bwrap_command,
                    to_host=(hub_port,),
                    dns_forward=self.dns_forward if resolv is not None else None,
                    blocked=list(self.blocked_networks),
                    allowed=list(self.allowed_networks),
                    inbound=forward,
                    cgroup_procs=[os.path.join(d, "cgroup.procs") for d in self.cgroup_dirs],
                )
                break
            except RuntimeError as exc:
                # the port was free when it was picked (random_port), and something took it
                # before pasta bound it (several servers starting at once): another port
                if _PORT_TAKEN not in str(exc) or attempt == _PORT_ATTEMPTS:
                    raise
                self.log.warning("%s: port %s was taken; trying another", self._log_name, forward)
                self.port = int(random_port())
        self.log.info(
            "%s: own network namespace (pasta %d: outbound IPv4 NAT, port %s from the host, hub "
            "port %d to it; %d networks prohibited%s)",
            self._log_name,
            namespace.pasta.pid,
            forward,
            hub_port,
            namespace.pasta.prohibited,
            f", DNS through {self.dns_forward}" if resolv is not None else "",
        )
        return namespace

    async def _wait_until_listening(self, ip: str, port: int, *, namespace_pid: int = 0) -> None:
        """Poll the port every ``readiness_interval`` instead of the hub's back-off.

        In a namespace of its own the server's socket is looked for in the namespace's
        ``/proc/<pid>/net/tcp``: on the host, pasta accepts connections on the port before the
        server listens behind it."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            status = self.proc.poll()
            if status is not None:
                if self._pump is not None:  # let the last lines in (bounded: orphans may linger)
                    await asyncio.to_thread(self._pump.join, 2)
                tail = "\n".join(list(self._output)[-5:])
                raise RuntimeError(f"The server exited ({status}) before it was ready:\n{tail}")
            if namespace_pid:
                if netns.listening_in_namespace(namespace_pid, port):
                    return
            else:
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
                except (TimeoutError, OSError):
                    pass
                else:
                    writer.close()
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"The server did not listen within {self.start_timeout}s")
            await asyncio.sleep(self.readiness_interval)

    async def _abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
        await asyncio.to_thread(self._release)

    # -- stop --------------------------------------------------------------------------------

    async def _signal(self, sig: int) -> bool:
        # bwrap does not forward signals: a graceful stop signals the server inside it.
        inner = self.server_pid
        if sig and inner and inner != self.pid and self.pid in self._ancestors(inner):
            try:
                os.kill(inner, sig)
                return True
            except ProcessLookupError:
                pass
        result: bool = await super()._signal(sig)
        return result

    @staticmethod
    def _ancestors(pid: int) -> list[int]:
        found = []
        for _ in range(6):
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
            found.append(pid)
        return found

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            await asyncio.to_thread(self._release)

    async def run_post_stop_hook(self) -> None:
        # The hub calls this after every stop, including when its poll found the server
        # already dead (then stop() is not called): the place to release host resources.
        await asyncio.to_thread(self._release)
        self._events.clear()
        await maybe_future(super().run_post_stop_hook())

    def _release(self) -> None:
        """Stop pasta; kill whatever is left in this server's cgroups, remove them and the
        volume links."""
        namespace, self._namespace = self._namespace, None
        if namespace is not None:
            namespace.close()
        for link in self.links:
            if os.path.islink(link):
                os.unlink(link)
        self.links = []
        self._cgroups = None
        try:
            left = cgroups.CgroupSet.from_dirs(self.cgroup_dirs)
        except ValueError as exc:
            self.log.error("Not releasing cgroups %s: %s", self.cgroup_dirs, exc)
            self.cgroup_dirs = []
            return
        if not left.release():
            self.log.error("Could not remove cgroups %s", left.dirs)
        self.cgroup_dirs = list(left.dirs)


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    """Run both to their end; raise the first one's error (after both ended, so that what
    the other made is in place for the caller's clean-up)."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]


__all__ = ["BinderySpawner", "InvalidLaunchOptions", "LaunchOptions"]
