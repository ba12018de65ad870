"""The local builder: a git checkout and a uv virtualenv on this machine.

``LocalBuilder.build`` does, in order:

1. **Reuse a complete checkout** of the same repository and commit when its environment
   is still ready: nothing is fetched or installed.
2. **Fetch** the commit into a temporary directory (``apps.repos.fetch.fetch``).
3. **Plan**: read the repo2docker configuration (``config.read_plan``) and choose the
   interpreter (``runtime.txt`` & co. are honoured when that Python is on this machine and
   new enough for the Jupyter packages, otherwise the default one with a warning) and its
   base set (``base-requirements-X.Y.txt`` for a minor the newest Jupyter packages no longer
   support, else ``base-requirements.txt``).
4. **Key** the environment: a hash of the files that shape it (requirements, Pipfile,
   environment.yml, runtime.txt, postBuild...), the Python version, the base packages
   and ``BUILDER_VERSION``, not the commit. When the repository itself is installed
   (setup.py, pyproject.toml, ``-e .``) every file of the commit but notebooks counts,
   since its code is copied into the environment. A build that used a credential is
   also keyed by its repository, so a private repository's environment (and its
   postBuild output) is never handed to another repository.
5. Under an flock on the key: **reuse** the ready environment, or **build** it: ``uv
   venv``, one ``uv pip install --compile-bytecode`` of the repository's requirements
   plus the base packages it does not name itself, then postBuild in the checkout with
   the environment active. uv and postBuild both run in bubblewrap when available
   (see "Sandboxes" below).
6. **Publish** the checkout (atomic rename) and mark both as used.

postBuild output and later commits: postBuild runs once per environment, in the checkout
of the commit that built it. What it wrote, changed or deleted in that checkout (``git
status``, ignored files included) is recorded in the environment (``.bindery/overlay``)
and replayed onto the checkout of every later commit that reuses the environment: added
files are copied when the new commit has no file of that name, changes and deletions of
tracked files are applied when the new commit still has the file as postBuild found it.
Otherwise the commit's own file wins and the build carries a warning naming it.

Sandboxes: installing a package runs its build backend (``setup.py``, any sdist's build
code), the repository's own included, so every uv command of a build runs in bubblewrap
like postBuild does: only /usr, /etc, /opt, the interpreter and the uv binary (read-only),
the checkout (writable, its ``.git`` read-only: git runs on the host afterwards), a private
/tmp and the network (the package index) are there; the portal's code, settings, secrets
and database, other checkouts and home directories are not. uv also gets the environment
and its cache writable. It hardlinks files from its cache into environments, and link(2)
fails (EXDEV) between two bind mounts even on one filesystem, so both must come in
through one bind: BINDERY_BUILD_DIR, when it holds the environments directory and the
cache and none of the portal's own directories. Otherwise the environment and the cache
are bound each on its own and uv copies (``UV_LINK_MODE=copy``; the build log says why).
Everything under BINDERY_BUILD_DIR is thus visible and writable to a build, other
environments and the cache included: it isolates the portal from builds, not builds from
each other. postBuild gets only its environment, the checkout and a temporary directory of
its own (on disk: its TMPDIR and tool caches).

Network: a build's sandboxed commands (every uv command, postBuild) run in a network
namespace of the build's own (``apps.netns``, as sessions do): outbound IPv4 through pasta,
so the package index and ``pip install`` in postBuild work, but every address of this
machine is unreachable: its loopback (PostgreSQL, Redis, the portal, the hub) and its other
addresses. Only the ports of a package index or HTTP proxy configured on this machine's
loopback are forwarded to it, and DNS when the host's resolver is on its loopback. The
namespace is set up once per build (about 30 ms) and entered by each command through
``nsenter`` (about 2 ms each); it and its pasta end with the build, and die with the worker.
``BINDERY_BUILD_NETWORK``: ``auto`` (isolated when root, bubblewrap, pasta, nsenter, ip and
an IPv4 default route are there, else the host's network, said once in the build log),
``isolated`` (required) or ``shared`` (the host's network).

``rfc3987-syntax`` is removed from every environment unless the repository asks for it:
jsonschema imports it only to check the "iri" formats and does without it, and its import
costs about 1.7 s at every server start (FIELD-NOTES).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from apps import cgroups, netns, sandbox
from apps.builds.backends import disk, progress, sandboxing, store
from apps.builds.backends.base import BuildRequest, BuildResult, LogSink
from apps.builds.backends.config import BuildPlan, read_plan
from apps.repos.fetch import fetch
from apps.repos.git import run_git
from portal import sandbox_network
from portal.errors import BackendError

log = logging.getLogger(__name__)

BUILDER_VERSION = "2"  # 2: sandboxed as unprivileged uids, sealed environments
BASE_REQUIREMENTS_FILE = Path(__file__).with_name("base-requirements.txt")
# The oldest Python with a base set of its own (base-requirements-3.6.txt: jupyterhub 2.3,
# jupyterlab 2.3 on the classic notebook server; launches through the 6.x hub, tested).
MIN_PYTHON = (3, 6)
# Removed after install unless the repository names them (see the module docstring).
DROPPED_PACKAGES = ("rfc3987-syntax",)
# JupyterLab asks every new user whether to fetch news from the internet and checks for
# updates; neither makes sense in a managed environment. Defaults, not locks: a user can
# still turn them on in the settings editor.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    }
}
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
# The machine's egress settings (CA bundles, proxies): npm, pip, git and curl in postBuild and
# build backends need them as the host's own clients do.
_CA_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
           "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")  # fmt: skip
_PASSED_ENV = (*_CA_ENV, "NO_PROXY", "no_proxy", *_PROXY_ENV)
_NETWORKS = ("auto", "isolated", "shared")
_MAX_LINE = 8192  # bytes of child output read at once (a longer line arrives in parts)
_PROGRESS = re.compile(r"\b\d{1,3}% \(\d+/\d+\)")
_SANDBOX_TMP = "/tmp"  # noqa: S108 - a private tmpfs inside the sandbox
_TRANSIENT = (
    "Failed to fetch", "Could not connect", "timed out", "dns error", "Connection reset",
    "error sending request", "Temporary failure", "503 Service", "502 Bad Gateway",
)  # fmt: skip


def read_base_requirements(path: Path = BASE_REQUIREMENTS_FILE) -> tuple[str, ...]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def base_requirements_file(minor: str) -> Path:
    """The base set for Python ``minor`` ("X.Y"): ``base-requirements-X.Y.txt`` when the
    newest Jupyter packages do not support that minor, else ``base-requirements.txt``."""
    own = BASE_REQUIREMENTS_FILE.with_name(f"base-requirements-{minor}.txt")
    return own if own.is_file() else BASE_REQUIREMENTS_FILE


# --- interpreters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.7"
    prefix: str  # its installation (sys.base_prefix), bound read-only into the sandbox

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@lru_cache(maxsize=32)
def _probe(path: str) -> Interpreter | None:
    try:
        out = subprocess.run(
            [path, "-I", "-c", "import platform, sys; print(platform.python_version()); "
             "print(sys.base_prefix)"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return Interpreter(path=path, version=out[0].strip(), prefix=os.path.realpath(out[1]))


def default_interpreter() -> Interpreter:
    """``settings.BINDERY_BUILD_PYTHON`` if set, else the interpreter the portal runs on."""
    configured = getattr(settings, "BINDERY_BUILD_PYTHON", "")
    candidate = configured or os.path.join(
        sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    found = _probe(candidate) or _probe(sys.executable)
    if found is None:
        log.error("the build interpreter %s (BINDERY_BUILD_PYTHON) does not run", candidate)
        raise BackendError(
            "This machine's Python for builds does not run; the operators have the details.",
            code="BUILD_PYTHON_MISSING",
        )
    return found


def find_interpreter(version: str) -> Interpreter | None:
    """An installed CPython ``version`` ("X.Y"), found by uv without downloading anything.

    pyenv's shims make uv's discovery fail outright for versions pyenv has not activated,
    so shim directories are left out of the search path and pyenv's installations are
    searched directly instead.
    """
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and "shims" not in d]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        dirs += sorted((str(p / "bin") for p in pyenv.iterdir()), reverse=True)
    try:
        out = subprocess.run(
            [uv_binary(), "python", "find", "--system", "--no-project", "--no-config", version],
            capture_output=True, text=True, timeout=30, cwd="/",
            env={"PATH": os.pathsep.join(dirs), "UV_PYTHON_DOWNLOADS": "never",
                 "HOME": tempfile.gettempdir()},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    found = _probe(out.stdout.strip())
    return found if found is not None and found.minor == version else None


def choose_interpreter(plan: BuildPlan) -> tuple[Interpreter, list[str]]:
    """The interpreter for ``plan`` and the warnings to show when it is not the one asked."""
    default = default_interpreter()
    wanted = plan.python_version
    if not wanted or wanted == default.minor:
        return default, []
    asked = f"Python {wanted} (asked for by {plan.python_source})"
    if tuple(int(p) for p in wanted.split(".")) < MIN_PYTHON:
        oldest = ".".join(map(str, MIN_PYTHON))
        return default, [
            f"{asked} is older than {oldest}, the oldest this builder has Jupyter server "
            f"packages for; using Python {default.version} instead."
        ]
    found = find_interpreter(wanted)
    if found is None:
        return default, [
            f"{asked} is not installed on this machine; using Python {default.version} instead."
        ]
    return found, []


def usable_interpreters() -> list[tuple[Interpreter, str]]:
    """(interpreter, base set file) for every Python a runtime.txt can get here: the default
    and each minor from MIN_PYTHON to 3.14 found on this machine, oldest first. Looked up
    again at most every five minutes (each minor is a ``uv python find``)."""
    return _usable_interpreters(int(time.monotonic() // 300))


@lru_cache(maxsize=1)
def _usable_interpreters(_period: int) -> list[tuple[Interpreter, str]]:
    default = default_interpreter()
    found = {default.minor: default}
    minors = [f"3.{minor}" for minor in range(MIN_PYTHON[1], 15) if f"3.{minor}" != default.minor]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for interpreter in pool.map(find_interpreter, minors):
            if interpreter is not None:
                found[interpreter.minor] = interpreter
    ordered = sorted(found.values(), key=lambda i: tuple(int(p) for p in i.minor.split(".")))
    return [(i, base_requirements_file(i.minor).name) for i in ordered]


def uv_binary() -> str:
    configured = getattr(settings, "BINDERY_UV_BIN", "")
    if configured:
        return str(configured)
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise BackendError("uv is not installed.", code="UV_MISSING") from None
        return found


def sandbox_mode() -> str:
    """ "bwrap" or "none", from settings.BINDERY_SANDBOX (on | off; auto and bwrap mean on,
    none off). Raises SANDBOX_UNAVAILABLE when it is on and this machine cannot sandbox
    (``apps.sandbox.probe`` says why): untrusted code never runs unsandboxed by default."""
    try:
        wanted = sandbox.require(str(getattr(settings, "BINDERY_SANDBOX", "on")))
    except (sandbox.SandboxUnavailable, ValueError) as exc:
        raise BackendError(str(exc), permanent=False, code="SANDBOX_UNAVAILABLE") from exc
    return "bwrap" if wanted else "none"


def network_plan(sandboxed: bool) -> tuple[netns.Tools | None, str]:
    """How sandboxed build commands reach the network, from settings.BINDERY_BUILD_NETWORK:
    ``(tools, "")`` for a namespace of the build's own, ``(None, why)`` for the host's
    network. Raises SANDBOX_UNAVAILABLE when it is ``isolated`` and that is impossible."""
    wanted = str(getattr(settings, "BINDERY_BUILD_NETWORK", "auto")).lower()
    if wanted not in _NETWORKS:
        raise BackendError(
            f"BINDERY_BUILD_NETWORK is {wanted!r}: it must be auto, isolated or shared.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    if wanted == "shared":
        return None, "BINDERY_BUILD_NETWORK is shared"
    tools, problem = None, "there is no bubblewrap sandbox"
    if sandboxed:
        tools, problem = netns.find_tools(who="the build worker")
    if tools is None and wanted == "isolated":
        raise BackendError(
            f"BINDERY_BUILD_NETWORK is isolated, but {problem}.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    return tools, problem


def loopback_services(environ: dict[str, str]) -> list[tuple[int, str]]:
    """``(port, what)`` for the package index and HTTP proxies (in ``environ``) configured on
    this machine's loopback (127.0.0.1 or localhost): the ports an isolated build reaches."""
    found: dict[int, str] = {}
    wanted = [("the package index", str(settings.BINDERY_PACKAGE_INDEX or ""))]
    wanted += [(name, environ.get(name, "")) for name in _PROXY_ENV]
    for what, url in wanted:
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            continue
        if port and (parts.hostname or "") in ("127.0.0.1", "localhost"):
            found.setdefault(port, what)
    return sorted(found.items())


def uv_binds(env: Path | None = None) -> tuple[tuple[Path, ...], str]:
    """(what the sandboxed uv gets writable, why uv copies instead of hardlinking or "").

    BINDERY_BUILD_DIR alone, when it holds both the environments directory and the uv
    cache and none of the portal's own directories: uv then hardlinks from its cache (one
    bind, one mount). Otherwise ``env`` and the cache each on its own (``env`` None: the
    cache only), and the reason uv has to copy. Raises SANDBOX_UNAVAILABLE when the cache
    directory holds portal directories: it cannot be shown to a build.
    """
    envs = store.envs_dir()
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    root = Path(getattr(settings, "BINDERY_BUILD_DIR", "") or cache)
    if envs.is_relative_to(root) and cache.is_relative_to(root):
        exposed = portal_paths_under(root)
        if not exposed:
            return (root,), ""
        reason = (
            f"BINDERY_BUILD_DIR ({root}) also holds {exposed[0]}, which builds must not see, "
            "so it is not bound whole"
        )
    else:
        reason = (
            f"BINDERY_ENVS_DIR ({envs}) and BINDERY_UV_CACHE_DIR ({cache}) are apart, not "
            f"both inside BINDERY_BUILD_DIR ({root})"
        )
    exposed = portal_paths_under(cache)
    if exposed:
        raise BackendError(
            f"BINDERY_UV_CACHE_DIR ({cache}) holds {exposed[0]}: builds cannot be given it.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    return ((cache,) if env is None else (env, cache)), reason


def portal_paths_under(root: Path) -> list[Path]:
    """The portal's own places at or under ``root``: its code, its state and secrets
    (VAR_DIR, the hub's directory, an SQLite database), the checkouts of every repository,
    sessions' working copies and volumes."""
    top = root.resolve()
    names = ("BASE_DIR", "VAR_DIR", "BINDERY_HUB_DIR", "BINDERY_CHECKOUTS_DIR",
             "BINDERY_SESSIONS_DIR", "BINDERY_VOLUMES_DIR")  # fmt: skip
    found = [Path(value).resolve() for name in names if (value := getattr(settings, name, ""))]
    database = settings.DATABASES["default"]
    if "sqlite" in str(database.get("ENGINE", "")) and database.get("NAME"):
        found.append(Path(str(database["NAME"])).resolve())
    return [path for path in found if path == top or path.is_relative_to(top)]


# --- one build's clock, log and subprocesses -------------------------------------------------


class _Job:
    def __init__(self, request: BuildRequest, log: LogSink) -> None:
        self.request = request
        self.log = log
        self.cancel = request.cancel
        self.timeout = request.timeout
        self.started = time.monotonic()
        self.deadline = self.started + request.timeout
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self.cancel.is_set():
            raise BackendError("The build was cancelled.", code="BUILD_CANCELLED")
        if time.monotonic() >= self.deadline:
            raise BackendError(
                f"The build took longer than {self.timeout:g} s and was stopped.",
                code="BUILD_TIMEOUT",
            )

    def say(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        self.log(line, phase=phase, stream=stream)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.say(f"Warning: {text}", stream="stderr")

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations[name] = round(
                self.durations.get(name, 0.0) + time.monotonic() - start, 3
            )

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        phase: str = "building",
        pass_fds: Sequence[int] = (),
        preexec: Callable[[], None] | None = None,
        output: progress.Output | None = None,
    ) -> tuple[int, list[str]]:
        """Run ``argv`` in its own process group, streaming every line to the log.

        Returns (exit status, last lines logged). On cancel or timeout the whole process
        group is killed and BUILD_CANCELLED / BUILD_TIMEOUT raised. A line is read
        ``_MAX_LINE`` bytes at a time at most: a child printing without newlines cannot make
        the worker hold more. ``output`` (``progress``) rewords or leaves out each line and
        adds progress lines while the child is quiet.
        """
        self.check()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, pass_fds=tuple(pass_fds),
            preexec_fn=preexec,
        )  # fmt: skip
        # bounded: a child flooding the log waits for the log, not the worker's memory
        lines: queue.Queue[tuple[str, bytes | None]] = queue.Queue(maxsize=1000)

        def pump(stream: Any, name: str) -> None:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                lines.put((name, raw))
            lines.put((name, None))

        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            threading.Thread(target=pump, args=(stream, name), daemon=True).start()
        tail: deque[str] = deque(maxlen=40)
        open_streams, exited_at = 2, 0.0
        try:
            while open_streams:
                if output is not None and (note := output.tick()):
                    self.say(note, phase=phase)
                try:
                    name, raw = lines.get(timeout=0.1)
                except queue.Empty:
                    self.check()
                    if not exited_at and proc.poll() is not None:
                        exited_at = time.monotonic()
                        _kill_group(proc)  # leftovers holding the pipes open
                    elif exited_at and time.monotonic() - exited_at > 5:
                        break  # something escaped the group and kept the pipes: stop reading
                    continue
                if raw is None:
                    open_streams -= 1
                    continue
                for part in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                    text = part if output is None or not part.strip() else output.line(part)
                    if text and text.strip():
                        tail.append(text)
                        self.say(text, phase=phase, stream=name)
            while True:
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    self.check()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        _kill_group(proc)
        if output is not None and (note := output.end(proc.returncode)):
            self.say(note, phase=phase)
        return proc.returncode, list(tail)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- the network of sandboxed commands ---------------------------------------------------------


@dataclass(frozen=True)
class _Isolation:
    """How a build's sandboxed commands enter its network namespace: ``prefix`` (nsenter)
    before bubblewrap, ``pass_fds`` for it, ``resolv`` a file bubblewrap shows as
    /etc/resolv.conf (DNS through pasta) or None."""

    prefix: tuple[str, ...]
    pass_fds: tuple[int, ...]
    resolv: str | None


@dataclass(frozen=True)
class _Network:
    """How one build's sandboxed commands reach the network: ``tools`` None for the host's,
    else one namespace of the build's own (``apps.netns.Namespace``) that reaches the host's
    loopback on ``to_host`` only; ``resolv`` is the sandbox's resolv.conf when DNS goes
    through pasta."""

    tools: netns.Tools | None
    to_host: tuple[int, ...] = ()
    resolv: str | None = None

    @contextmanager
    def isolation(self, job: _Job) -> Iterator[_Isolation | None]:
        """The build's namespace while the block runs (None: the host's network); the
        namespace and its pasta end with the block, however it ends. Raises
        SANDBOX_UNAVAILABLE when it cannot be set up."""
        if self.tools is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="bindery-netns-") as scratch:
            resolv = None
            if self.resolv is not None:
                resolv = os.path.join(scratch, "resolv.conf")
                Path(resolv).write_text(self.resolv)
                os.chmod(resolv, 0o644)
            with job.timed("network"):
                try:
                    # from the build's thread: the namespace's holder and pasta die with it
                    namespace = netns.Namespace.create(
                        self.tools, to_host=self.to_host,
                        dns_forward=netns.DNS_FORWARD if resolv is not None else None,
                        blocked=sandbox_network.blocked_networks(),
                        allowed=sandbox_network.allowed_networks(),
                    )  # fmt: skip
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                    raise BackendError(
                        f"The build's sandbox could not get a network of its own: {exc}",
                        permanent=False,
                        code="SANDBOX_UNAVAILABLE",
                    ) from exc
            try:
                yield _Isolation(tuple(namespace.enter), namespace.pass_fds, resolv)
            finally:
                with job.timed("network"):
                    namespace.close()


# --- the builder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Steps:
    """How one build runs its commands: on the host as root (``slot`` None: BINDERY_SANDBOX
    is off), or in the sandbox as the cache's owner (trusted uv steps) or as the build's own
    uid (everything that runs a stranger's code); see ``sandboxing``."""

    job: _Job
    interpreter: Interpreter
    variables: dict[str, str]
    writable: tuple[Path, ...]
    checkout: Path
    isolation: _Isolation | None
    slot: sandboxing.Slot | None
    limits: Callable[[], None] | None = None  # joins the build's cgroups (apps.cgroups)

    @property
    def sandboxed(self) -> bool:
        return self.slot is not None

    def run(
        self,
        argv: Sequence[str],
        *,
        trusted: bool,
        chdir: Path | None = None,
        variables: dict[str, str] | None = None,
        writable: Sequence[Path] = (),
        input_text: str | None = None,
        timeout: float | None = None,
        own_view: bool = False,
        output: progress.Output | None = None,
    ) -> tuple[int, list[str]]:
        """Run ``argv`` (streamed to the log, or with ``input_text`` captured quietly);
        returns (status, last lines). ``own_view``: only ``writable`` and the checkout are
        writable (postBuild), not the build directory uv needs. ``output``: see
        ``_Job.run``."""
        env = {**self.variables, **(variables or {})}
        if self.slot is not None and not trusted:
            # never the shared cache: the build's farm of it, or none
            if self.slot.farm.is_dir():
                env["UV_CACHE_DIR"] = str(self.slot.farm)
            else:
                env.pop("UV_CACHE_DIR", None)
                env["UV_NO_CACHE"] = "1"
        where = chdir or self.checkout
        if self.slot is None:
            if input_text is not None:
                return _capture(list(argv), env, where, input_text, timeout)
            return self.job.run(argv, cwd=where, env=env, output=output)
        spec = self.spec(
            trusted=trusted, chdir=where, variables=env, writable=writable, own_view=own_view
        )
        with sandbox.prepared(spec) as prepared:
            command = [*prepared.argv, *argv]
            if input_text is not None:
                return _capture(command, {}, Path("/"), input_text, timeout, prepared.pass_fds)
            return self.job.run(command, cwd=Path("/"), env={}, pass_fds=prepared.pass_fds,
                                preexec=_build_limits(self.limits), output=output)  # fmt: skip

    def spec(
        self,
        *,
        trusted: bool,
        chdir: Path,
        variables: dict[str, str],
        writable: Sequence[Path] = (),
        own_view: bool = False,
    ) -> sandbox.Spec:
        assert self.slot is not None
        owner = sandboxing.ids().cache if trusted else self.slot.uid
        shown = [*writable] if own_view else [*self.writable, *writable]
        read_only = [self.interpreter.prefix, self.interpreter.path, uv_binary()]
        read_only += [v for k in _CA_ENV if (v := variables.get(k))]
        over: list[tuple[str, str]] = []
        if trusted:
            read_only.append(str(self.checkout))
        else:
            shown.append(self.checkout)
            if (self.checkout / ".git").is_dir():
                # git runs on the host afterwards (git status, for the overlay): code that
                # could edit .git/config could make it run a filter or hook of its choosing.
                over.append((str(self.checkout / ".git"), str(self.checkout / ".git")))
        files: tuple[tuple[str, str], ...] = ()
        prefix: tuple[str, ...] = ()
        fds: tuple[int, ...] = ()
        if self.isolation is not None:
            prefix, fds = self.isolation.prefix, self.isolation.pass_fds
            if self.isolation.resolv is not None:
                files = (("/etc/resolv.conf", Path(self.isolation.resolv).read_text()),)
        return sandbox.Spec(
            identity=sandbox.Identity(uid=owner, gid=owner, name="builder"),
            chdir=str(chdir),
            read_only=tuple(read_only),
            writable=tuple(str(p) for p in dict.fromkeys(shown)),
            read_only_over=tuple(over),
            files=files,
            env=tuple(variables.items()),
            prefix=prefix,
            prefix_fds=fds,
        )


def _capture(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    input_text: str,
    timeout: float | None,
    pass_fds: Sequence[int] = (),
) -> tuple[int, list[str]]:
    try:
        done = subprocess.run(
            argv, input=input_text, capture_output=True, text=True, env=env, cwd=cwd,
            timeout=timeout, pass_fds=tuple(pass_fds), check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, ["timed out"]
    return done.returncode, done.stdout.splitlines()[-40:]


def _build_limits(join: Callable[[], None] | None = None) -> Callable[[], None]:
    """For a build command's process, before it execs: limits that hold for its whole tree
    (the build's uid is its own, so the process count is the build's): processes, the size
    of any one file, CPU seconds."""
    processes = int(getattr(settings, "BINDERY_BUILD_MAX_PROCESSES", 512))
    file_size = int(getattr(settings, "BINDERY_BUILD_MAX_FILE_BYTES", 8 * 1024**3))
    cpu = int(getattr(settings, "BINDERY_BUILD_TIMEOUT", 1200)) * 2

    def limit() -> None:
        if join is not None:
            join()
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return limit


@lru_cache(maxsize=8)
def _log_once(message: str) -> None:
    log.warning(message)


class LocalBuilder:
    """Builds environments on this machine with uv. See the module docstring."""

    def __init__(self, base_requirements: Sequence[str] | None = None) -> None:
        # Given (tests, benchmarks): that set for every Python. Otherwise each interpreter's
        # own (``base_requirements_file``).
        self.base_requirements = tuple(base_requirements) if base_requirements is not None else None

    # -- the Builder protocol ------------------------------------------------------------

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        """Build (or reuse) the environment for ``request``.

        Returns a BuildResult with every field set. Raises BackendError: the codes of
        ``config.read_plan`` and ``apps.repos.fetch.fetch``, BUILD_TIMEOUT,
        BUILD_CANCELLED, INSTALL_FAILED (transient when the index could not be reached),
        ENVIRONMENT_FAILED, POSTBUILD_FAILED, SANDBOX_UNAVAILABLE (transient). Safe to
        call twice: the second call reuses what the first made; calls for the same
        environment key at once produce one environment.
        """
        job = _Job(request, log)
        repo = request.repo
        checkout = store.checkouts_dir() / repo.slug / repo.resolved_ref
        scope = self._scope(request)
        job.check()

        reused = self._reuse_checkout(job, checkout, scope)
        if reused is not None:
            return reused

        tmp = checkout.with_name(f".tmp-{repo.resolved_ref[:12]}-{secrets.token_hex(4)}")
        try:
            with job.timed("fetch"):
                self._fetch(job, tmp)
            with job.timed("plan"):
                job.say("Reading the repository's configuration")
                plan = read_plan(tmp)
                interpreter, notes = choose_interpreter(plan)
                key = self.environment_key(plan, tmp, interpreter, scope)
            self._describe(job, plan, interpreter, key)
            for note in (*plan.warnings, *notes):
                job.warn(note)
            record, built = self._environment(job, key, plan, interpreter, tmp)
            with job.timed("checkout"):
                checkout_path = self._publish(job, tmp, checkout, key, plan)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self._finish(job, key, record, checkout_path, plan, reused=not built)

    def mark_used(self, result: BuildResult) -> None:
        disk.mark_used(result)

    def environment_exists(self, result: BuildResult) -> bool:
        """Whether the result's environment is still ready and its checkout still there."""
        env = Path(result.environment_path)
        checkout = Path(result.checkout_path)
        return (
            store.read_json(env.with_name(f"{env.name}.json")) is not None
            and (env / "pyvenv.cfg").is_file()
            and checkout.is_dir()
            and store.checkout_record_path(checkout).is_file()
        )

    # -- keys ----------------------------------------------------------------------------

    def base_set(self, interpreter: Interpreter) -> tuple[str, tuple[str, ...]]:
        """(name, lines): the base set for ``interpreter``, named by its file ("given" when
        the builder was made with one)."""
        if self.base_requirements is not None:
            return "given", self.base_requirements
        path = base_requirements_file(interpreter.minor)
        return path.name, read_base_requirements(path)

    def base_lines(self, plan: BuildPlan, interpreter: Interpreter) -> list[str]:
        """The base packages to add: those the repository does not name itself."""
        lines = []
        for line in self.base_set(interpreter)[1]:
            try:
                name: str = canonicalize_name(Requirement(line).name)
            except InvalidRequirement:
                name = ""
            if name not in plan.requirement_names:
                lines.append(line)
        return lines

    def environment_key(
        self, plan: BuildPlan, checkout: Path, interpreter: Interpreter, scope: str = ""
    ) -> str:
        """The environment's key: a hash of everything that shapes it, not the commit."""
        files = {}
        for rel in plan.dependency_files:
            path = checkout / rel
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        material = {
            "builder": BUILDER_VERSION,
            "python": interpreter.version,
            "base_set": self.base_set(interpreter)[0],
            "base": self.base_lines(plan, interpreter),
            "index": settings.BINDERY_PACKAGE_INDEX,
            "requirements": plan.requirements,
            "conda": plan.conda_packages,
            "files": files,
            "tree": _tree_digest(checkout) if plan.installs_repository else "",
            "scope": scope,
        }
        blob = json.dumps(material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    @staticmethod
    def _scope(request: BuildRequest) -> str:
        used = getattr(request.repo, "is_private", False) or any(
            c.host == request.repo.host for c in request.credentials
        )
        return f"{request.repo.provider}:{request.repo.repo_url}" if used else ""

    # -- steps ---------------------------------------------------------------------------

    def _reuse_checkout(self, job: _Job, checkout: Path, scope: str) -> BuildResult | None:
        """A result from a complete checkout of this commit whose environment is ready."""
        record = store.read_json(store.checkout_record_path(checkout))
        if record is None or not checkout.is_dir():
            return None
        try:
            plan = read_plan(checkout)
            interpreter, _ = choose_interpreter(plan)
            key = self.environment_key(plan, checkout, interpreter, scope)
        except (BackendError, OSError):
            return None
        if key != record.get("environment_key"):
            return None
        with store.flock(store.env_lock_path(key), cancel=job.cancel, check=job.check):
            env_record = store.env_record(key)
            if env_record is None:
                return None
            job.say(
                f"Reusing the checkout of {job.request.repo.resolved_ref[:12]}", phase="fetching"
            )
            store.touch(store.checkout_record_path(checkout))
            store.touch(store.env_record_path(key))
        for note in record.get("warnings", []):
            job.warn(note)
        return self._finish(job, key, env_record, checkout, plan, reused=True)

    def _fetch(self, job: _Job, dest: Path) -> None:
        """``fetch`` in a thread, its lines logged from this one (log sinks need not be
        thread-safe), its timeout the build's."""
        request = job.request
        lines: queue.Queue[str] = queue.Queue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                fetch(
                    request.repo, dest, credentials=request.credentials, log=lines.put,
                    timeout=max(1.0, job.remaining()), cancel=job.cancel,
                )  # fmt: skip
            except BaseException as exc:
                failure.append(exc)

        dest.parent.mkdir(parents=True, exist_ok=True)
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while worker.is_alive() or not lines.empty():
            with suppress(queue.Empty):
                line = lines.get(timeout=0.1)
                # git's progress counters update in place; keep each counter's last state
                if not _PROGRESS.search(line) or line.rstrip().endswith("done."):
                    job.say(line, phase="fetching")
        if failure:
            exc = failure[0]
            if isinstance(exc, BackendError) and exc.code == "GIT_TIMEOUT":
                job.check()
            raise exc
        job.check()

    def _describe(self, job: _Job, plan: BuildPlan, interpreter: Interpreter, key: str) -> None:
        where = f"{plan.config_dir}/" if plan.config_dir else "the repository root"
        files = ", ".join(plan.config_files) or "none (only the base packages)"
        job.say(f"Configuration from {where}: {files}")
        job.say(f"Python {interpreter.version}")
        name, lines = self.base_set(interpreter)
        job.say(f"Base packages: {', '.join(lines)}")
        # Host paths and the key are for operators, not the build log: the key is on the
        # build's receipt once it is ready, the interpreter and base set in the
        # environment's record (store.env_record_path).
        log.info(
            "build %s: environment %s, Python %s (%s), base set %s",
            job.request.build_id, key, interpreter.version, interpreter.path, name,
        )  # fmt: skip

    def _environment(
        self, job: _Job, key: str, plan: BuildPlan, interpreter: Interpreter, checkout: Path
    ) -> tuple[dict[str, Any], bool]:
        """(record, built): reuse the ready environment ``key`` or build it, under its lock."""
        lock_started = time.monotonic()

        def waiting() -> None:
            job.say("Waiting for another build of the same environment to finish")

        with store.flock(
            store.env_lock_path(key), cancel=job.cancel, check=job.check, on_wait=waiting
        ):
            job.durations["lock_wait"] = round(time.monotonic() - lock_started, 3)
            record = store.env_record(key)
            if record is not None:
                job.say("The environment is ready: reusing it, nothing to install")
                with job.timed("reuse"):
                    self._apply_overlay(job, key, record, checkout)
                store.touch(store.env_record_path(key))
                return record, False
            env = store.env_path(key)
            try:
                network = self._network(job)
                with network.isolation(job) as isolation:
                    record = self._build_environment(
                        job, key, env, plan, interpreter, checkout, isolation
                    )
            except BaseException:
                store.env_record_path(key).unlink(missing_ok=True)
                shutil.rmtree(env, ignore_errors=True)
                raise
            return record, True

    def _build_environment(
        self,
        job: _Job,
        key: str,
        env: Path,
        plan: BuildPlan,
        interpreter: Interpreter,
        checkout: Path,
        isolation: _Isolation | None,
    ) -> dict[str, Any]:
        """Build the environment, every sandboxed command in ``isolation`` (None: the
        host's network). Sandboxed, the trusted steps run as the cache's owner and the rest
        as a build uid of its own (``sandboxing``); the environment is sealed before its
        ready record is written."""
        if env.exists():
            job.say("Removing an unfinished environment left by an interrupted build")
            shutil.rmtree(env)
        sandboxed = sandbox_mode() == "bwrap"
        cache = Path(settings.BINDERY_UV_CACHE_DIR)
        slot_context = sandboxing.build_slot(cache) if sandboxed else nullcontext(None)
        with (
            tempfile.TemporaryDirectory(prefix="bindery-uv-home-") as home,
            slot_context as slot,
            self._cgroups(job, slot) as limits,
        ):
            steps = self._steps(job, plan, interpreter, env, checkout, home, isolation, slot)
            steps = dataclasses.replace(steps, limits=limits)
            base = self.base_lines(plan, interpreter)
            for line in self.base_set(interpreter)[1]:
                if line not in base:
                    job.say(f"Base package {line}: the repository's own requirement is used")
            if slot is not None:
                with job.timed("sandbox"):
                    sandboxing.own_cache(cache, store.envs_dir())
                    sandboxing.give_checkout(checkout, slot.uid)
            skipped: list[str] = []
            conda: list[str] = []
            built_from_source = False
            self._venv(steps, env, trusted=True)
            if plan.conda_packages:
                with job.timed("conda_check"):
                    conda, skipped = self._check_conda(job, plan, interpreter, steps)
            skip_warning = (
                "environment.yml: skipped conda packages not found on the package index "
                f"under the same name: {', '.join(skipped)}."
            )
            if skipped:
                job.warn(skip_warning)
            requirements = [_absolute(line, checkout) for line in plan.requirements]
            wanted = "\n".join([*requirements, *conda, *base]) + "\n"
            job.say("Installing packages with uv")
            with job.timed("install"):
                if slot is not None:
                    built_from_source = not self._install_wheels(job, steps, env, wanted)
                    if built_from_source:
                        farm = sandboxing.make_farm(cache, slot)
                        self._venv(steps, env, trusted=False)
                        self._write_requirements(env, wanted)
                        self._uv(job, steps, ["pip", "install", "--python", str(env / "bin" /
                                 "python"), "--compile-bytecode", *self._index_args(), "-r",
                                 str(env / ".bindery" / "requirements.in")], "INSTALL_FAILED",
                                 trusted=False, variables={"UV_CACHE_DIR": str(farm),
                                 "UV_LINK_MODE": "copy"}, env=env)  # fmt: skip
                    else:
                        sandboxing.hand_over(env, slot.uid)
                else:
                    self._write_requirements(env, wanted)
                    self._uv(job, steps, ["pip", "install", "--python", str(env / "bin" / "python"),
                                          "--compile-bytecode", *self._index_args(), "-r",
                                          str(env / ".bindery" / "requirements.in")],
                             "INSTALL_FAILED", trusted=True, env=env)  # fmt: skip
                present = dict(sandboxing.packages(env))
                drop = [
                    name for name in DROPPED_PACKAGES
                    if name not in plan.requirement_names and name in present
                ]  # fmt: skip
                if drop:
                    job.say(f"Removing {', '.join(drop)}: Jupyter works without it, and "
                            "importing it would slow down every server start")  # fmt: skip
                    self._uv(job, steps, ["pip", "uninstall", "--python",
                                          str(env / "bin" / "python"), *drop], "INSTALL_FAILED",
                             trusted=False, variables={"UV_NO_CACHE": "1"}, env=env)  # fmt: skip
            if slot is not None and not built_from_source:
                with job.timed("bytecode"):
                    self._compile(job, steps, env, interpreter)
            _quiet_jupyterlab(env)
            overlay: list[dict[str, str]] = []
            postbuild_sandbox = ""
            before = None
            if plan.postbuild:
                with job.timed("postbuild"):
                    before = None if (checkout / ".git").exists() else _signatures(checkout)
                    postbuild_sandbox = self._postbuild(job, plan, env, steps)
            if slot is not None:
                # the build's processes are gone: nothing can change these trees any more
                with job.timed("seal"):
                    sandbox.seal_tree(env, keep_owner=sandboxing.ids().cache)
                    sandbox.seal_tree(checkout)
            if plan.postbuild:
                with job.timed("postbuild"):
                    overlay = _record_overlay(job, checkout, store.overlay_path(key), before)
            job.check()
        record: dict[str, Any] = {
            "key": key,
            "builder_version": BUILDER_VERSION,
            "python_version": interpreter.version,
            "python": interpreter.path,
            "base_set": self.base_set(interpreter)[0],
            "packages": sandboxing.packages(env),
            "warnings": [skip_warning] if skipped else [],
            "skipped_conda_packages": skipped,
            "overlay": overlay,
            "sandbox": postbuild_sandbox,
            "uv_sandbox": "bwrap" if steps.sandboxed else "none",
            "uv_link_mode": "copy" if built_from_source else steps.variables.get(
                "UV_LINK_MODE", "hardlink"),
            "built_from_source": built_from_source,
            "network": "isolated" if isolation is not None else "shared",
            "created": datetime.now(UTC).isoformat(),
            "built_from": f"{job.request.repo.repo_url}@{job.request.repo.resolved_ref}",
            "durations": dict(job.durations),
        }  # fmt: skip
        store.write_json(store.env_record_path(key), record)  # the environment is ready
        return record

    @staticmethod
    @contextmanager
    def _cgroups(job: _Job, slot: sandboxing.Slot | None) -> Iterator[Callable[[], None] | None]:
        """The build's memory, process and CPU limits (``apps.cgroups``) while the block
        runs: what its commands join before they exec. None without a sandbox."""
        if slot is None:
            yield None
            return
        memory = disk.parse_size(str(getattr(settings, "BINDERY_BUILD_MEMORY", "4G")))
        limits = cgroups.Limits(
            memory, int(getattr(settings, "BINDERY_BUILD_MAX_PROCESSES", 512)),
            float(getattr(settings, "BINDERY_BUILD_CPU", 0)) or None,
        )  # fmt: skip
        installation = hashlib.sha256(str(settings.BINDERY_BUILD_DIR).encode()).hexdigest()[:8]
        group = cgroups.create(
            cgroups.safe_name("build", str(slot.number)), limits,
            parent=f"bindery-builds-{installation}",
        )  # fmt: skip
        job.say(f"Build limits: {group.describe()}")
        try:
            yield group.preexec_fn()
        finally:
            group.release()

    def _venv(self, steps: _Steps, env: Path, *, trusted: bool) -> None:
        """A fresh virtualenv at ``env``, the owner of the step that makes it."""
        if steps.slot is not None:
            owner = sandboxing.ids().cache if trusted else steps.slot.uid
            sandboxing.new_environment(env, owner)
        with steps.job.timed("venv"):
            self._uv(steps.job, steps, ["venv", "--no-project", "--allow-existing", "--python",
                                        steps.interpreter.path, str(env)],
                     "ENVIRONMENT_FAILED", trusted=trusted, env=env)  # fmt: skip

    @staticmethod
    def _write_requirements(env: Path, wanted: str) -> None:
        sandbox.write_nofollow(env, ".bindery/requirements.in", wanted.encode())

    def _install_wheels(self, job: _Job, steps: _Steps, env: Path, wanted: str) -> bool:
        """The trusted install: wheels only (``--no-build``: nothing from a package runs),
        as the cache's owner, hardlinked from the shared cache. False when something must
        be built from source (the caller then builds as the build's uid)."""
        self._write_requirements(env, wanted)
        args = ["pip", "install", "--python", str(env / "bin" / "python"), "--no-build",
                *self._index_args(), "-r", str(env / ".bindery" / "requirements.in")]  # fmt: skip
        # uv's error, when it fails, is held back: the install from source says it again if
        # it is still one, and a transient one becomes the build's error
        reader = progress.UvOutput(_places(steps, env), hold_errors=True)
        status, tail = steps.run([uv_binary(), *args], trusted=True, output=reader)
        if status == 0:
            return True
        tail = [*tail, *reader.held][-40:]
        text = "\n".join(tail)
        if any(marker in text for marker in _TRANSIENT):
            self._fail_uv(tail, "INSTALL_FAILED")
        job.say(
            "Not every package could be installed from a wheel: installing again, building "
            "from source as the build's own unprivileged user, with the shared cache read-only"
        )
        return False

    def _compile(self, job: _Job, steps: _Steps, env: Path, interpreter: Interpreter) -> None:
        """Byte-compile the environment's packages as the build's uid (compiling runs the
        environment's interpreter, and so any ``.pth`` file a wheel shipped)."""
        sites = [str(p) for p in sorted(env.glob("lib/python*/site-packages"))]
        if not sites:
            return
        # Not -q: compileall names each file it compiles, which progress.CompileOutput counts
        # (unbuffered: the workers' lines then arrive whole and as they come).
        argv = [str(env / "bin" / "python"), "-u", "-m", "compileall", "-j", "0", *sites]
        reader = progress.CompileOutput(_places(steps, env, *((site, "") for site in sites)))
        status, tail = steps.run(argv, trusted=False, chdir=env, output=reader)
        if status != 0:
            job.warn(
                "Byte-compiling some packages failed; they are compiled when imported "
                f"({meaningful_line(tail)[:200]})."
            )

    def _check_conda(
        self, job: _Job, plan: BuildPlan, interpreter: Interpreter, steps: _Steps
    ) -> tuple[list[str], list[str]]:
        """Split environment.yml's conda packages into (found on the index, skipped).

        Each is resolved alone, without dependencies (``uv pip compile --no-deps``), as a
        trusted step (``--no-build``: a package only published as source counts as not
        found): offline that asks the uv cache, otherwise the configured index (PyPI by
        default).
        """
        job.say(f"Looking up {len(plan.conda_packages)} conda packages on the package index")
        no_build = ["--no-build"] if steps.sandboxed else []

        def exists(requirement: str) -> bool:
            status, _ = steps.run(
                [uv_binary(), "pip", "compile", "--no-deps", "--no-header", "--quiet",
                 *no_build, "--python", interpreter.path, *self._index_args(), "-"],
                trusted=True, chdir=Path("/"), input_text=requirement + "\n",
                timeout=max(1.0, min(120.0, job.remaining())),
            )  # fmt: skip
            return status == 0

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(exists, plan.conda_packages))
        job.check()
        found = [r for r, ok in zip(plan.conda_packages, results, strict=True) if ok]
        skipped = [r for r, ok in zip(plan.conda_packages, results, strict=True) if not ok]
        return found, skipped

    def _postbuild(self, job: _Job, plan: BuildPlan, env: Path, steps: _Steps) -> str:
        """Run postBuild from the checkout with ``env`` active, as the build's uid; returns
        the sandbox used. Its shebang is read inside the sandbox (``sandbox.RUN_SCRIPT``)."""
        checkout = steps.checkout
        script = str(checkout / plan.postbuild)
        sandboxed = steps.sandboxed
        # postBuild's TMPDIR and tool caches: a directory on disk of the build's own, bound into
        # the sandbox at the same path. On disk, not the sandbox's tmpfs /tmp: without swap a
        # tmpfs is memory the build's cgroup cannot reclaim (npm's and yarn's caches of a
        # JupyterLab build are hundreds of MB), and what a failed step left there (JupyterLab's
        # debug log) can still be read afterwards (_postbuild_failure). Removed afterwards
        # (shutil.rmtree follows no symlink).
        scratch = tempfile.mkdtemp(prefix="bindery-postbuild-")
        try:
            if steps.slot is not None:
                os.chown(scratch, steps.slot.uid, steps.slot.uid)
            tmp = scratch
            # repo2docker's runtime contract as the session has it (docs/architecture.md and
            # sessions/spawner.py get_env): the home is the repository, ~/.local/bin before
            # the environment's bin, the environment under repo2docker's names, npm's global
            # prefix in the environment (`npm install -g` lands on the sessions' PATH).
            variables = {
                "PATH": f"{checkout}/.local/bin:{env}/bin:{sandbox.SYSTEM_PATH}",
                "VIRTUAL_ENV": str(env),
                "NB_PYTHON_PREFIX": str(env),
                "KERNEL_PYTHON_PREFIX": str(env),
                "NPM_CONFIG_PREFIX": str(env),
                "HOME": str(checkout),  # repo2docker's REPO_DIR is the home directory
                "REPO_DIR": str(checkout),
                "USER": "jovyan",
                "NB_USER": "jovyan",
                "NB_UID": str(steps.slot.uid if steps.slot is not None else os.getuid()),
                "SHELL": "/bin/bash",
                "LANG": "C.UTF-8",  # repo2docker's en_US.UTF-8 is not generated here
                "LANGUAGE": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
                "PIP_NO_CACHE_DIR": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_INPUT": "1",
                "TMPDIR": tmp,
                "XDG_CACHE_HOME": f"{tmp}/.cache",  # yarn 1's cache, pip's, ...
                "npm_config_cache": f"{tmp}/.npm",
                # yarn 2+ (JupyterLab's jlpm) keeps a mirror of every package it fetches in
                # ~/.yarn/berry: in the home, the checkout, it would be recorded in the overlay
                # and copied into every session's working copy (~150 MB for one extension).
                "YARN_GLOBAL_FOLDER": f"{tmp}/.yarn-berry",
                **{k: v for k in _PASSED_ENV if (v := os.environ.get(k))},
            }
            if sandboxed:
                job.say(f"Running {plan.postbuild} in the sandbox, as the build's own user")
            else:
                job.warn(f"{plan.postbuild} ran without a sandbox (BINDERY_SANDBOX is off).")
            status, tail = steps.run(
                sandbox.script_command(script), trusted=False, chdir=checkout,
                variables=variables, writable=(env, Path(scratch)), own_view=True,
            )  # fmt: skip
            last = _postbuild_failure(job, Path(scratch), tail) if status != 0 else ""
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if status != 0:
            raise BackendError(
                f"{plan.postbuild} failed with exit status {status}"
                + (f": {last[:300]}" if last else "."),
                code="POSTBUILD_FAILED",
            )
        return "bwrap" if sandboxed else "none"

    def _apply_overlay(self, job: _Job, key: str, record: dict[str, Any], checkout: Path) -> None:
        """Replay what postBuild did to its checkout onto ``checkout``."""
        source = store.overlay_path(key)
        conflicts: list[str] = []
        for item in record.get("overlay", []):
            rel, change, blob = item["path"], item["change"], item.get("blob", "")
            target = checkout / rel
            if not _inside(checkout, target.parent):
                conflicts.append(rel)  # the new commit made a parent a symlink out
                continue
            current = _git_blob(target)
            if (change == "added" and current is None) or (
                change == "modified" and current == blob
            ):
                sandbox.copy_nofollow(source, rel, checkout)
            elif change == "deleted" and current == blob:
                target.unlink()
            elif not (change == "deleted" and current is None):
                conflicts.append(rel)
        if record.get("overlay"):
            job.say(f"Applied {len(record['overlay']) - len(conflicts)} files postBuild made")
        if conflicts:
            job.warn(
                "This commit changed files that postBuild also wrote when the environment was "
                f"built; the commit's version is kept: {', '.join(sorted(conflicts)[:20])}."
            )

    def _publish(self, job: _Job, tmp: Path, checkout: Path, key: str, plan: BuildPlan) -> Path:
        """Move the prepared checkout into place (atomic rename) and record it."""
        record = {
            "environment_key": key,
            "repo": job.request.repo.repo_url,
            "commit": job.request.repo.resolved_ref,
            "start_script": plan.start,
            "config_files": list(plan.config_files),
            "warnings": list(job.warnings),
            "created": datetime.now(UTC).isoformat(),
        }
        record_path = store.checkout_record_path(checkout)
        with store.flock(store.checkout_lock_path(checkout), cancel=job.cancel, check=job.check):
            existing = store.read_json(record_path)
            if checkout.exists():
                if existing is not None and existing.get("environment_key") == key:
                    job.say("Another build already put this commit's checkout in place")
                    store.touch(record_path)
                    return checkout
                # An older checkout of this commit (its environment was pruned and rebuilt,
                # or a build was killed before recording it): replace it.
                record_path.unlink(missing_ok=True)
                trash = checkout.with_name(f".trash-{checkout.name}-{secrets.token_hex(4)}")
                os.rename(checkout, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, checkout)
            store.write_json(record_path, record)
        return checkout

    def _finish(
        self,
        job: _Job,
        key: str,
        env_record: dict[str, Any],
        checkout: Path,
        plan: BuildPlan,
        *,
        reused: bool,
    ) -> BuildResult:
        for note in env_record.get("warnings", []):
            if reused:
                job.warn(note)
        job.durations["total"] = round(time.monotonic() - job.started, 3)
        packages = tuple(sorted((str(n), str(v)) for n, v in env_record.get("packages", [])))
        job.say(_summary(job.durations, reused=reused), phase="built")
        return BuildResult(
            environment_key=key,
            environment_path=str(store.env_path(key)),
            checkout_path=str(checkout),
            python_version=str(env_record.get("python_version", "")),
            config_files=plan.config_files,
            packages=packages,
            warnings=tuple(job.warnings),
            reused=reused,
            start_script=plan.start,
            durations=dict(job.durations),
        )

    # -- the network -------------------------------------------------------------------

    @staticmethod
    def _network(job: _Job) -> _Network:
        """This build's :class:`_Network`, said once in the build log."""
        tools, why = network_plan(sandboxed=sandbox_mode() == "bwrap")
        if tools is None:
            message = (
                f"Build commands use this machine's network ({why}): a repository's build code "
                "can reach every service listening on this machine, its loopback included."
            )
            if why == "BINDERY_BUILD_NETWORK is shared":  # as configured: said, not warned
                job.say(message)
                _log_once(message)
            else:
                job.warn(message)
                _log_once(f"{message} Install passt (pasta) and bubblewrap to isolate builds.")
            return _Network(None)
        services = loopback_services({k: v for k in _PROXY_ENV if (v := os.environ.get(k))})
        resolv = netns.host_sandbox_resolv_conf(netns.DNS_FORWARD)
        extra = [f"port {port} of this machine's loopback ({what})" for port, what in services]
        if resolv is not None:
            extra.append(f"DNS through this machine's resolver ({netns.DNS_FORWARD})")
        job.say(
            "Build commands get a network of their own: the internet through pasta, nothing "
            "on this machine" + (f" but {', '.join(extra)}" if extra else "")
        )
        return _Network(tools, tuple(port for port, _ in services), resolv)

    # -- uv ------------------------------------------------------------------------------

    @staticmethod
    def _uv_env(home: str) -> dict[str, str]:
        """A clean environment for uv: no portal secrets for sdist build scripts to read."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": home,
            "UV_CACHE_DIR": str(settings.BINDERY_UV_CACHE_DIR),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_CONFIG": "1",
            "UV_NO_PROGRESS": "1",
            **{k: v for k in _PASSED_ENV if (v := os.environ.get(k))},
        }

    def _steps(
        self,
        job: _Job,
        plan: BuildPlan,
        interpreter: Interpreter,
        env: Path,
        checkout: Path,
        home: str,
        isolation: _Isolation | None,
        slot: sandboxing.Slot | None,
    ) -> _Steps:
        """How this build runs its commands (see :class:`_Steps` and the module docstring),
        with what uv may write and whether it hardlinks or copies."""
        if slot is None:
            if plan.installs_repository:
                job.warn(
                    "The repository's package was built without a sandbox (BINDERY_SANDBOX is off)."
                )
            return _Steps(job, interpreter, self._uv_env(home), (), checkout, None, None)
        variables = self._uv_env(_SANDBOX_TMP)
        variables["TMPDIR"] = _SANDBOX_TMP
        writable, copying = uv_binds(env)
        for place in writable:
            place.mkdir(parents=True, exist_ok=True)  # bind targets must exist
        farm_root = Path(settings.BINDERY_UV_CACHE_DIR).parent / sandboxing.FARMS
        if not any(farm_root == w or farm_root.is_relative_to(w) for w in writable):
            farm_root.mkdir(parents=True, exist_ok=True)
            writable = (*writable, farm_root)
        if copying:
            variables["UV_LINK_MODE"] = "copy"
            # why (directory settings and their paths) is for the operators' log
            job.say("uv copies packages from its cache instead of hardlinking them (slower)")
            _log_once(f"Builds copy packages from the uv cache instead of hardlinking: {copying}.")
        job.say("uv runs in a bubblewrap sandbox, as an unprivileged user")
        return _Steps(job, interpreter, variables, writable, checkout, isolation, slot)

    @staticmethod
    def _index_args() -> list[str]:
        args = ["--offline"] if settings.BINDERY_UV_OFFLINE else []
        if settings.BINDERY_PACKAGE_INDEX:
            args += ["--index-url", settings.BINDERY_PACKAGE_INDEX]
        return args

    def _uv(
        self,
        job: _Job,
        steps: _Steps,
        args: list[str],
        code: str,
        *,
        trusted: bool,
        variables: dict[str, str] | None = None,
        env: Path,
    ) -> None:
        """Run uv with ``args`` for the environment ``env``, its output reworded for the log
        (``progress.UvOutput``); raises BackendError ``code`` when it fails."""
        reader = progress.UvOutput(
            _places(steps, env), compiles="--compile-bytecode" in args,
            doing="Resolving dependencies" if args[:2] == ["pip", "install"] else None,
        )  # fmt: skip
        status, tail = steps.run(
            [uv_binary(), *args], trusted=trusted, variables=variables, output=reader
        )
        if status != 0:
            self._fail_uv(tail, code)

    @staticmethod
    def _fail_uv(tail: list[str], code: str) -> None:
        text = "\n".join(tail)
        cause = meaningful_line(tail)
        for line in tail:
            for marker in ("cause:", "error:", "╰─▶"):
                if marker in line and "No solution found" not in line:
                    cause = clean_line(line.split(marker, 1)[1])
        transient = any(marker in text for marker in _TRANSIENT)
        what = (
            "Creating the environment" if code == "ENVIRONMENT_FAILED"
            else "Installing the packages"
        )  # fmt: skip
        raise BackendError(
            f"{what} failed: {cause.strip()[:500]}",
            permanent=not transient,
            code=code,
        )


# --- helpers ----------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]")
_SPINNER = re.compile(r"^[\s\-\\|/⠀-⣿.·•]*$")
# Python's warnings module: "<file>:<line>: <Category>: <message>", then the source line, indented
_WARNING = re.compile(r"^\S.*?:\d+: (?:[A-Z]\w*)?Warning: (.+)$")
# JupyterLab's last words when its build failed: where its debug log (yarn's output) is
_JUPYTERLAB_DEBUG_LOG = re.compile(r"See the log file for details: (/\S+)")
_DEBUG_LOG_BYTES = 8 * 1024 * 1024  # the end of the debug log read back, at most
_DEBUG_LOG_LINES = 1000  # of which the last lines shown in the build log
_YARN_FETCHING = "YN0013:"  # yarn 2+: "… can't be found in the cache and will be fetched …"


def clean_line(line: str) -> str:
    """``line`` without terminal escape codes, carriage-return redraws or characters rubbed
    out with backspaces (how JupyterLab's build draws its spinner)."""
    text = line.rsplit("\r", 1)[-1]
    if "\b" in text:
        kept: list[str] = []
        for char in text:
            if char != "\b":
                kept.append(char)
            elif kept:
                kept.pop()
        text = "".join(kept)
    return _ANSI.sub("", text).strip()


def meaningful_line(tail: Sequence[str]) -> str:
    """The last line of ``tail`` that says something: escape codes stripped, progress
    spinners (``-\\|/``, braille, with or without backspaces) and blank lines skipped; a Python
    warning counts as its message, and the source line Python prints under it is skipped."""
    for index in range(len(tail) - 1, -1, -1):
        text = clean_line(tail[index])
        if not text or _SPINNER.match(text):
            continue
        if index and tail[index][:1] in (" ", "\t") and _WARNING.match(clean_line(tail[index - 1])):
            continue
        warning = _WARNING.match(text)
        return warning.group(1).strip() if warning else text
    return ""


def _postbuild_failure(job: _Job, scratch: Path, tail: Sequence[str]) -> str:
    """Why postBuild failed, for its error message: ``meaningful_line(tail)``; but when its last
    words point at a JupyterLab debug log in its temporary directory ``scratch`` (``jupyter lab
    build`` and ``jupyter labextension install`` keep yarn's output there), the end of that log
    is copied into the build log, as nobody can reach the file, and the reason is what
    JupyterLab said before pointing at it ("RuntimeError: npm dependencies failed to install")."""
    for index in range(len(tail) - 1, -1, -1):
        found = _JUPYTERLAB_DEBUG_LOG.search(clean_line(tail[index]))
        if found:
            break
    else:
        return meaningful_line(tail)
    path = Path(os.path.normpath(found.group(1)))
    if path.parent == scratch:
        try:  # a file the build wrote: read as root without following a symlink
            data = sandbox.read_nofollow(scratch, path.name, limit=_DEBUG_LOG_BYTES, tail=True)
        except OSError:
            data = b""
        lines = [clean_line(line) for line in data.decode(errors="replace").splitlines()]
        if len(data) >= _DEBUG_LOG_BYTES:
            lines = lines[1:]  # cut mid-line
        # yarn reprints its progress: every line once, without its lines saying a package is
        # being downloaded (thousands in a JupyterLab build)
        kept = list(dict.fromkeys(t for t in lines if t and _YARN_FETCHING not in t))
        if kept:
            job.say(
                f"JupyterLab's debug log {path.name} ends (repeated lines and yarn's download "
                "progress left out):",
                stream="stderr",
            )
            for line in kept[-_DEBUG_LOG_LINES:]:
                job.say(line, stream="stderr")
    return meaningful_line(tail[:index]) or meaningful_line(tail)


# The steps the last line of a build names, with how long each took (job.durations' keys).
_SUMMARY_STEPS = (
    ("lock_wait", "waiting for another build"), ("fetch", "fetching"),
    ("install", "installing packages"), ("bytecode", "compiling bytecode"),
    ("postbuild", "postBuild"),
)  # fmt: skip


def _summary(durations: dict[str, float], *, reused: bool) -> str:
    """The build's last line: ``Built in 14.2 s (fetching 0.3 s, installing packages
    9.8 s, …)``, or that it installed nothing."""
    total = progress.seconds(durations.get("total", 0.0))
    if reused:
        return f"Done in {total}: the environment was reused, nothing was installed"
    steps = [
        f"{label} {progress.seconds(durations[name])}"
        for name, label in _SUMMARY_STEPS
        if durations.get(name, 0.0) >= 0.1
    ]
    return f"Built in {total}" + (f" ({', '.join(steps)})" if steps else "")


def _places(steps: _Steps, env: Path, *relative: tuple[str | Path, str]) -> progress.Places:
    """The host paths uv and compileall print for ``env``, as the build log names them:
    the repository's files by their path in it, ``relative`` (dir, prefix) likewise, the
    rest by what they are."""
    python = f"Python {steps.interpreter.version}"
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    return progress.Places(
        names=[
            (env / ".bindery" / "requirements.in", "the combined requirements"),
            (env, "<environment>"),
            (steps.checkout, "the repository"),
            (steps.interpreter.path, python),
            (steps.interpreter.prefix, f"<{python}>"),
            (cache, "<uv cache>"),
            (cache.parent / sandboxing.FARMS, "<uv cache>"),
            (store.envs_dir(), "<environments>"),
            (store.checkouts_dir(), "<checkouts>"),
            (str(getattr(settings, "BINDERY_BUILD_DIR", "")), "<build directory>"),
            (str(settings.VAR_DIR), "<portal data>"),
        ],
        prefixes=[(steps.checkout, ""), *relative],
    )


def _quiet_jupyterlab(env: Path) -> None:
    """Write JupyterLab's admin defaults (LAB_OVERRIDES) unless the environment has its own
    (as root, following no symlink a build could have planted)."""
    if not (env / "share" / "jupyter" / "lab").is_dir():
        return  # no JupyterLab in this environment
    with suppress(OSError):
        sandbox.write_nofollow(
            env, "share/jupyter/lab/settings/overrides.json",
            (json.dumps(LAB_OVERRIDES, indent=2) + "\n").encode(), exclusive=True,
        )  # fmt: skip


def _absolute(line: str, checkout: Path) -> str:
    """Plan lines name repository paths as ./<path>; uv gets them absolute."""
    for prefix in ("-c ", "--find-links ", ""):
        if line.startswith(prefix + "./"):
            rest = line[len(prefix) + 2 :]
            return f"{prefix}{checkout / rest if rest else checkout}"
    return line


def _tree_digest(checkout: Path) -> str:
    """Every file of the commit but notebooks: what a package install can copy."""
    if (checkout / ".git").exists():
        listing = run_git(["-C", str(checkout), "ls-tree", "-r", "-z", "--full-tree", "HEAD"])
        entries = sorted(e for e in listing.split("\0") if e and not e.endswith(".ipynb"))
        return hashlib.sha256("\0".join(entries).encode()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(checkout.rglob("*")):
        if path.is_file() and path.suffix != ".ipynb":
            digest.update(str(path.relative_to(checkout)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git_blob(path: Path) -> str | None:
    """git's blob id for a file (or symlink), None if there is none."""
    try:
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _inside(root: Path, path: Path) -> bool:
    resolved, top = path.resolve(), root.resolve()
    return resolved == top or resolved.is_relative_to(top)


def _signatures(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``: what a non-git checkout looked like."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def _changes(
    job: _Job, checkout: Path, before: dict[str, tuple[int, int]] | None
) -> list[tuple[str, str, str]]:
    """(path, added|modified|deleted, git blob before) for what postBuild did."""
    if before is None:
        status = run_git(
            ["-C", str(checkout), "status", "--porcelain=v1", "-z", "--ignored=traditional",
             "--untracked-files=all", "--no-renames"], timeout=120,
        )  # fmt: skip
        listing = run_git(["-C", str(checkout), "ls-tree", "-r", "-z", "--full-tree", "HEAD"])
        tree = {}
        for entry in listing.split("\0"):
            if "\t" in entry:
                meta, rel = entry.split("\t", 1)
                tree[rel] = meta.split()[2]
        changes = []
        for entry in status.split("\0"):
            if len(entry) < 4:
                continue
            code, rel = entry[:2], entry[3:]
            kind = "added" if code in ("??", "!!") else "deleted" if "D" in code else "modified"
            changes.append((rel, kind, tree.get(rel, "")))
        return changes
    # Not a git checkout (a record): new files are replayed; for changes to the record's own
    # files the earlier content is unknown, so they cannot be replayed safely.
    after = _signatures(checkout)
    touched = sorted(
        rel for rel in before.keys() | after.keys()
        if rel in before and before[rel] != after.get(rel)
    )  # fmt: skip
    if touched:
        job.warn(
            "postBuild changed or deleted files of the record itself; later versions that "
            f"reuse this environment will not get those changes: {', '.join(touched[:20])}."
        )
    return [(rel, "added", "") for rel in sorted(after.keys() - before.keys())]


def _record_overlay(
    job: _Job, checkout: Path, overlay: Path, before: dict[str, tuple[int, int]] | None
) -> list[dict[str, str]]:
    """What postBuild changed in ``checkout``, with its files copied under ``overlay`` (beside
    the environment, root's: the sandbox never sees it) without following a symlink."""
    changes = _changes(job, checkout, before)
    recorded, refused = sandboxing.record_overlay(
        checkout, overlay, [rel for rel, change, _ in changes if change != "deleted"]
    )
    kept = set(recorded)
    items = [
        {"path": rel, "change": change, "blob": blob}
        for rel, change, blob in changes
        if change == "deleted" or rel in kept
    ]
    for reason in refused[:20]:
        job.warn(f"postBuild output {reason} could not be recorded")
    if items:
        job.say(f"postBuild changed {len(items)} files in the checkout; recorded for reuse")
    return items
