"""Memory, process-count and CPU limits for one process tree, on cgroup v1 and cgroup v2.

One :class:`CgroupSet` per sandboxed tree (a session's server, a build): :func:`create` makes
its cgroup directories and writes the limits that the machine lets it write; a child joins
them before exec (:meth:`CgroupSet.preexec_fn`, or :attr:`CgroupSet.procs_files` for a
preexec of one's own); :meth:`CgroupSet.release` kills whatever is left and removes them,
also from the directory list saved before a restart (:meth:`CgroupSet.from_dirs`).

- **v1** (a tmpfs at the root with one mount per controller, as on this machine): one
  directory per controller, ``<root>/<controller>/<parent>/<name>``, with
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, no swap on top, where swap
  is accounted), ``pids.max``, ``cpu.cfs_period_us``/``cpu.cfs_quota_us``.
- **v2** (the unified hierarchy mounted at the root): one directory
  ``<root>/<parent>/<name>`` with ``memory.max``, ``memory.swap.max`` = 0 where present,
  ``pids.max`` and ``cpu.max``, after enabling the controllers in the ``cgroup.subtree_control``
  of the root and of every parent level. A root that is not delegated to this process (not
  writable, controllers not available, or processes in it: EBUSY) is reported per limit in
  :attr:`CgroupSet.missing`.

A limit that cannot be placed is reported, never silently dropped; memory then falls back to
``RLIMIT_AS`` (:attr:`CgroupSet.fallback_rlimit_as`), which bounds each process's address
space rather than the tree's memory.

Nothing here imports Django or ``portal``: the JupyterHub process imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import resource
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms
CONTROLLERS = ("memory", "pids", "cpu")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def safe_name(*parts: str, max_length: int = 63) -> str:
    """A bounded, DNS-label- and file-name-safe name for ``parts`` (lower-case letters, digits
    and ``-``), made unique by a hash of the exact parts: ``("Bob", "a/b")`` → ``bob-a-b-<hash>``.
    """
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:10]
    cleaned = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    room = max_length - len(digest) - 1
    if room < 1:
        raise ValueError(f"max_length must leave room for the {len(digest)}-character hash")
    cleaned = cleaned[:room].rstrip("-")
    return f"{cleaned}-{digest}" if cleaned else digest


def detect(root: str = CGROUP_ROOT) -> str:
    """``"v2"`` when the unified hierarchy is mounted at ``root``, ``"v1"`` when per-controller
    v1 hierarchies are (a hybrid host, v1 controllers plus an empty ``unified/``, is v1),
    ``"none"`` otherwise."""
    base = Path(root)
    if (base / "cgroup.controllers").is_file():
        return "v2"
    if any((base / c / "cgroup.procs").is_file() for c in CONTROLLERS):
        return "v1"
    return "none"


@dataclass(frozen=True)
class Limits:
    """What one tree may use; ``None`` asks for no limit of that kind."""

    memory_bytes: int | None
    max_processes: int | None
    cpu: float | None = None

    def __post_init__(self) -> None:
        for what, value in (("memory_bytes", self.memory_bytes),
                            ("max_processes", self.max_processes), ("cpu", self.cpu)):  # fmt: skip
            if value is not None and value <= 0:
                raise ValueError(f"{what} must be positive, or None for no limit")

    def wanted(self) -> list[str]:
        values = (self.memory_bytes, self.max_processes, self.cpu)
        return [c for c, v in zip(CONTROLLERS, values, strict=True) if v is not None]


@dataclass
class CgroupSet:
    """The cgroups of one process tree and what they enforce.

    ``dirs``: the cgroup directories (save them to release after a restart); ``applied``: the
    controllers whose limit holds, in ``CONTROLLERS`` order; ``missing``: for each limit asked
    for that does not hold, why (for operators' logs; :meth:`describe` is for people).
    """

    version: str
    dirs: list[str]
    limits: Limits = field(default_factory=lambda: Limits(None, None))
    applied: tuple[str, ...] = ()
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dirs(cls, dirs: Iterable[str]) -> CgroupSet:
        """The set whose directories were saved as ``dirs`` (e.g. in a spawner's state), to
        kill what is left in them and remove them. Directories that are not cgroups below a
        parent (a hierarchy's root, a plain folder) are refused: releasing them would kill
        every process on the machine."""
        kept = []
        for directory in dirs:
            path = Path(directory)
            if not path.is_absolute() or not _is_leaf_cgroup(path):
                raise ValueError(f"{directory} is not a per-tree cgroup directory")
            if path.exists():
                kept.append(str(path))
        versions = {"v2" if (Path(d) / "cgroup.controllers").exists() else "v1" for d in kept}
        version = versions.pop() if len(versions) == 1 else ("none" if not kept else "mixed")
        return cls(version=version, dirs=kept)

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a child writes itself into before exec."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    @property
    def fallback_rlimit_as(self) -> int:
        """Bytes for ``RLIMIT_AS`` when no memory cgroup holds the memory limit, else 0."""
        if self.limits.memory_bytes is None or "memory" in self.applied:
            return 0
        return self.limits.memory_bytes

    def preexec_fn(self) -> Callable[[], None]:
        """A ``preexec_fn`` that joins these cgroups, then sets the ``RLIMIT_AS`` fallback."""
        procs = self.procs_files
        rlimit_as = self.fallback_rlimit_as

        def preexec() -> None:  # in the child, before exec: nothing it runs escapes the limits
            for path in procs:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"0")  # 0: the writing process (v1 and v2)
                finally:
                    os.close(fd)
            if rlimit_as:
                resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

        return preexec

    def describe(self) -> str:
        """What holds, for people: ``memory 2 GB, 256 processes, 1.5 CPUs``."""
        parts = []
        if self.limits.memory_bytes is not None:
            memory = f"memory {_size(self.limits.memory_bytes)}"
            parts.append(memory if "memory" in self.applied else f"{memory} per process")
        if self.limits.max_processes is not None:
            count = self.limits.max_processes
            plural = "process" if count == 1 else "processes"
            parts.append(f"{count} {plural}" if "pids" in self.applied else "no process limit")
        if self.limits.cpu is not None:
            cpu = f"{self.limits.cpu:g} CPU" + ("" if self.limits.cpu == 1 else "s")
            parts.append(cpu if "cpu" in self.applied else "no CPU limit")
        return ", ".join(parts) if parts else "no limits"

    def memory_current(self) -> int | None:
        """Bytes the tree uses now (page cache included), or None without a memory cgroup."""
        for directory in self.dirs:
            for name in ("memory.current", "memory.usage_in_bytes"):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    return int(Path(directory, name).read_text())
        return None

    def kill_all(self, timeout: float = 10) -> None:
        """SIGKILL every process in these cgroups (and in cgroups below them) until none is
        left; raises TimeoutError if some stay. Safe to call again, and on removed dirs."""
        deadline = time.monotonic() + timeout
        for directory in self.dirs:
            with contextlib.suppress(OSError):  # v2, Linux >= 5.14: the kernel kills the lot
                _write(Path(directory, "cgroup.kill"), "1")
        while True:
            left = [pid for d in self.dirs for pid in _procs_below(Path(d))]
            if not left:
                return
            _kill(left, self.dirs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes {left[:10]} in {self.dirs} did not exit")
            time.sleep(0.02)  # SIGKILL is delivered asynchronously

    def release(self, timeout: float = 10) -> bool:
        """Kill what is left and remove the directories (parents stay). True when nothing is
        left; ``dirs`` keeps what could not be removed (save it and call again). Idempotent."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            self.kill_all(timeout)
        remaining = []
        for directory in self.dirs:
            if not _remove_tree(Path(directory), deadline):
                remaining.append(directory)
        self.dirs = remaining
        return not remaining


def create(
    name: str, limits: Limits, *, root: str = CGROUP_ROOT, parent: str = "bindery"
) -> CgroupSet:
    """The cgroups for one tree named ``name`` (see :func:`safe_name`) under ``parent``, with
    the ``limits`` written that this machine allows; never raises for a limit it cannot
    place (see ``missing``). Processes left in same-named cgroups (by a process that died
    before releasing them) are killed first. ``name`` and each component of ``parent`` must
    be plain names (ValueError)."""
    parents = parent.split("/") if parent else []
    for component in [name, *parents]:
        if not _COMPONENT.fullmatch(component) or component in (".", ".."):
            raise ValueError(f"{component!r} is not a plain cgroup name")
    if not parents:
        raise ValueError("a parent is required: per-tree cgroups never sit at a root")
    version = detect(root)
    if version == "v2":
        return _create_v2(name, limits, Path(root), parents)
    if version == "v1":
        return _create_v1(name, limits, Path(root), parents)
    missing = {c: f"no cgroup hierarchy at {root}" for c in limits.wanted()}
    return CgroupSet(version="none", dirs=[], limits=limits, missing=missing)


def memory_in_use(name: str, *, parent: str, root: str = CGROUP_ROOT) -> int | None:
    """Bytes the tree that :func:`create` placed as ``name`` under ``parent`` uses now, or
    None when it has no memory cgroup there (ended, never limited, another machine).

    What is counted is the *working set*, as the kubelet, cAdvisor and ``docker stats`` count
    it: v2 ``memory.current`` minus ``inactive_file`` of ``memory.stat``; v1
    ``memory.usage_in_bytes`` minus ``total_inactive_file``. Not v1's "usage minus cache":
    ``cache`` holds tmpfs and shared memory too (the sandbox's private ``/tmp`` and
    ``/dev/shm``), which without swap is never given back and counts towards the limit like
    any allocation; inactive file pages are what the kernel reclaims first, so they are not
    "used" in the sense of "how close is this to being killed". Two small file reads, no
    subprocess: cheap enough for every running row of a list. ``name`` and each component of
    ``parent`` (required: trees never sit at a root) must be plain names (ValueError), as for
    :func:`create`."""
    parents = parent.split("/")
    for component in [name, *parents]:
        if not _COMPONENT.fullmatch(component) or component in (".", ".."):
            raise ValueError(f"{component!r} is not a plain cgroup name")
    version = detect(root)
    if version == "v2":
        directory, usage_file, inactive_key = Path(root), "memory.current", "inactive_file"
    elif version == "v1":
        directory = Path(root, "memory")
        usage_file, inactive_key = "memory.usage_in_bytes", "total_inactive_file"
    else:
        return None
    directory = directory.joinpath(*parents, name)
    try:  # the cgroup may go between the two reads: then it has no reading
        usage = int(Path(directory, usage_file).read_text())
        stat = Path(directory, "memory.stat").read_text().splitlines()
        inactive = next(
            (int(v) for k, _, v in (s.partition(" ") for s in stat) if k == inactive_key), 0
        )
    except (OSError, ValueError):
        return None
    return max(usage - inactive, 0)


def _v1_files(limits: Limits) -> dict[str, list[tuple[str, str, bool]]]:
    """Per controller: (file, value, required) in the order they must be written."""
    files: dict[str, list[tuple[str, str, bool]]] = {}
    if limits.memory_bytes is not None:
        value = str(limits.memory_bytes)
        # memsw (memory + swap, where swap is accounted) may never be below the memory limit:
        # lift it, set the limit, then hold memsw to it (no swap on top)
        files["memory"] = [("memory.memsw.limit_in_bytes", "-1", False),
                           ("memory.limit_in_bytes", value, True),
                           ("memory.memsw.limit_in_bytes", value, False)]  # fmt: skip
    if limits.max_processes is not None:
        files["pids"] = [("pids.max", str(limits.max_processes), True)]
    if limits.cpu is not None:
        files["cpu"] = [("cpu.cfs_period_us", str(CPU_PERIOD_US), True),
                        ("cpu.cfs_quota_us", str(_cpu_quota(limits.cpu)), True)]  # fmt: skip
    return files


def _create_v1(name: str, limits: Limits, root: Path, parents: list[str]) -> CgroupSet:
    dirs: list[str] = []
    applied: list[str] = []
    missing: dict[str, str] = {}
    for controller, files in _v1_files(limits).items():
        base = root / controller
        if not (base / "cgroup.procs").is_file():
            missing[controller] = f"no v1 {controller} hierarchy at {base}"
            continue
        directory = base.joinpath(*parents, name)
        try:
            _fresh_dir(directory)
            _write_all(directory, files)
        except OSError as exc:
            missing[controller] = f"cannot write {controller} limits in {directory}: {_why(exc)}"
            with contextlib.suppress(OSError):
                directory.rmdir()
            continue
        if str(directory) not in dirs:  # co-mounted controllers share a directory
            dirs.append(str(directory))
        applied.append(controller)
    return CgroupSet("v1", dirs, limits, _ordered(applied), missing)


def _v2_files(limits: Limits) -> dict[str, list[tuple[str, str, bool]]]:
    files: dict[str, list[tuple[str, str, bool]]] = {}
    if limits.memory_bytes is not None:
        files["memory"] = [("memory.max", str(limits.memory_bytes), True),
                           ("memory.swap.max", "0", False)]  # fmt: skip
    if limits.max_processes is not None:
        files["pids"] = [("pids.max", str(limits.max_processes), True)]
    if limits.cpu is not None:
        files["cpu"] = [("cpu.max", f"{_cpu_quota(limits.cpu)} {CPU_PERIOD_US}", True)]
    return files


def _create_v2(name: str, limits: Limits, root: Path, parents: list[str]) -> CgroupSet:
    missing: dict[str, str] = {}
    wanted = _v2_files(limits)
    available = set(_tokens(root / "cgroup.controllers"))
    for controller in wanted:
        if controller not in available:
            missing[controller] = (
                f"the {controller} controller is not available in {root} (cgroup.controllers: "
                f"{' '.join(sorted(available)) or 'none'}): it is bound to a v1 hierarchy or "
                "not delegated to this process"
            )
    levels = [root.joinpath(*parents[:i]) for i in range(len(parents) + 1)]
    directory = levels[-1] / name
    try:
        for level in levels[1:]:
            level.mkdir(exist_ok=True)
    except OSError as exc:
        return _not_writable(root, exc, limits, missing)
    for level in levels:  # a controller reaches a cgroup only if every ancestor passes it down
        enabled = set(_tokens(level / "cgroup.subtree_control"))
        for controller in wanted:
            if controller in missing or controller in enabled:
                continue
            try:
                _write(level / "cgroup.subtree_control", f"+{controller}\n", append=True)
            except OSError as exc:
                missing[controller] = (
                    f"cgroup v2 at {root} is not delegated: cannot enable {controller} in "
                    f"{level}/cgroup.subtree_control ({_why(exc)})"
                )
    try:
        _fresh_dir(directory)
    except OSError as exc:
        return _not_writable(root, exc, limits, missing)
    applied = []
    for controller, files in wanted.items():
        if controller in missing:
            continue
        try:
            _write_all(directory, files)
        except OSError as exc:
            missing[controller] = f"cannot write {controller} limits in {directory}: {_why(exc)}"
            continue
        applied.append(controller)
    # the directory is kept even without a limit in it: kill_all still finds every process
    return CgroupSet("v2", [str(directory)], limits, _ordered(applied), missing)


def _not_writable(root: Path, exc: OSError, limits: Limits, missing: dict[str, str]) -> CgroupSet:
    why = f"cgroup v2 at {root} is not writable here ({_why(exc)}): not delegated"
    for controller in limits.wanted():
        missing.setdefault(controller, why)
    return CgroupSet("v2", [], limits, (), missing)


def _fresh_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents); one left by a process that died is emptied."""
    if directory.is_dir():
        CgroupSet("", [str(directory)]).kill_all()
    directory.mkdir(parents=True, exist_ok=True)


def _write_all(directory: Path, files: list[tuple[str, str, bool]]) -> None:
    """Write each (file, value, required); an optional file may be absent or refuse."""
    for filename, value, required in files:
        if required:
            _write(directory / filename, value)
        else:
            with contextlib.suppress(OSError):
                _write(directory / filename, value)


def _write(path: Path, value: str, *, append: bool = False) -> None:
    # never O_CREAT: in a cgroup every control file exists; a missing one means no controller
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _tokens(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _procs_below(directory: Path) -> list[int]:
    pids: list[int] = []
    for current, _, _ in os.walk(directory):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            pids += [int(p) for p in Path(current, "cgroup.procs").read_text().split()]
    return [p for p in pids if p != os.getpid()]


def _kill(pids: Sequence[int], dirs: Sequence[str]) -> None:
    """SIGKILL ``pids`` without hitting a process that took over a pid after its owner left
    the cgroup: pin each with a pidfd, check it is still listed, then signal the pidfd."""
    pinned: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                pinned[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                with contextlib.suppress(ProcessLookupError):  # Linux < 5.3: no pidfds
                    os.kill(pid, signal.SIGKILL)
        still = {p for d in dirs for p in _procs_below(Path(d))}
        for pid, fd in pinned.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in pinned.values():
            os.close(fd)


def _remove_tree(directory: Path, deadline: float) -> bool:
    """rmdir ``directory`` and the cgroups below it, deepest first (a cgroup directory goes
    with its control files in it). Retries while the kernel still counts exiting tasks."""
    if not directory.exists():
        return True
    for current, _, _ in sorted(os.walk(directory), key=lambda w: -len(Path(w[0]).parts)):
        while True:
            try:
                os.rmdir(current)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
    return True


def _is_leaf_cgroup(path: Path) -> bool:
    """A cgroup directory that is neither a hierarchy's root nor directly below one (where
    :func:`create` never puts a tree), or one that no longer exists (released already)."""
    if not path.exists():
        return True
    return (
        (path / "cgroup.procs").is_file()
        and not os.path.ismount(path)
        and not os.path.ismount(path.parent)
        and (path.parent / "cgroup.procs").is_file()
    )


def _ordered(applied: Iterable[str]) -> tuple[str, ...]:
    chosen = set(applied)
    return tuple(c for c in CONTROLLERS if c in chosen)


def _cpu_quota(cpu: float) -> int:
    return max(MIN_CPU_QUOTA_US, round(cpu * CPU_PERIOD_US))


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _size(count: int) -> str:
    """Bytes as people read them (1024-based, like Django's filesizeformat): ``2 GB``."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            text = f"{value:.1f}".removesuffix(".0") if unit != "bytes" else str(count)
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


__all__ = ["CGROUP_ROOT", "CgroupSet", "Limits", "create", "detect", "memory_in_use", "safe_name"]
