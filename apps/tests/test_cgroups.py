"""apps.cgroups: memory, process and CPU limits that hold, on cgroup v1 and v2.

The real tests run children in cgroups of this machine's hierarchy (cgroup v1 here: a
tmpfs at /sys/fs/cgroup with one mount per controller; as root) and show each limit biting,
against a control child without it: a child that allocates past the memory limit is killed
by the kernel, one that forks past the process limit gets EAGAIN, one that spins under a CPU
quota is throttled. They are written against whatever :func:`detect` finds, so they run on a
delegated cgroup v2 host too. Where no writable hierarchy exists they skip, and fail in CI.

cgroup v2 with its controllers cannot be reached on this machine (its unified mount has none
of them: they are bound to v1). The v2 writer is tested against a directory tree in tmp_path
laid out as the kernel lays out a v2 hierarchy, asserting the exact files written; the v2
plumbing without limits (joining, cgroup.kill, removal) is tested on the real unified mount.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps import cgroups
from apps.cgroups import CgroupSet, Limits, create, detect, safe_name
from apps.testing import require, requires

ROOT = cgroups.CGROUP_ROOT
MiB = 1024 * 1024
V1_WRITABLE = detect(ROOT) == "v1" and all(
    os.access(Path(ROOT, c), os.W_OK) for c in cgroups.CONTROLLERS
)
V2_WRITABLE = detect(ROOT) == "v2" and os.access(ROOT, os.W_OK)
real_cgroups = requires(
    V1_WRITABLE or V2_WRITABLE,
    reason=f"no writable cgroup hierarchy at {ROOT} (root and cgroup v1 or delegated v2 needed)",
)
ALLOCATE = "data = b'x' * (128 << 20); print('allocated', len(data))"
FORK = """
import os
r, w = os.pipe()
forked, error = 0, 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # until the parent closes the pipe
        os._exit(0)
    forked += 1
print(forked, error)
os.close(w)
for _ in range(forked):
    os.wait()
"""
SPIN = "import time\nwhile time.process_time() < 0.15: pass\nprint('done')"
HOLD = "import sys\ndata = b'x' * (16 << 20)\nprint('ready', flush=True)\nsys.stdin.read()"


@pytest.fixture
def parent() -> Iterator[str]:
    """A parent of this test's own, removed afterwards with anything left below it."""
    name = f"bindery-test-{uuid.uuid4().hex[:12]}"
    yield name
    bases = [Path(ROOT, c) for c in cgroups.CONTROLLERS] + [Path(ROOT), Path(ROOT, "unified")]
    for base in bases:
        top = base / name
        if not top.is_dir():
            continue
        children = [str(p) for p in top.iterdir() if p.is_dir()]
        assert CgroupSet.from_dirs(children).release()
        top.rmdir()


def _dir(cgset: CgroupSet, controller: str) -> Path:
    """The directory holding ``controller``'s files (one per controller on v1, one on v2)."""
    if cgset.version == "v2":
        return Path(cgset.dirs[0])
    (found,) = [Path(d) for d in cgset.dirs if Path(d).is_relative_to(Path(ROOT, controller))]
    return found


def _counter(path: Path, key: str) -> int:
    rows = dict(line.split() for line in path.read_text().splitlines())
    return int(rows[key])


# --- real cgroups -----------------------------------------------------------------------------


@real_cgroups
def test_a_child_past_the_memory_limit_is_killed_and_a_control_child_is_not(parent: str):
    cgset = create("memory-test", Limits(64 * MiB, 20), root=ROOT, parent=parent)
    assert cgset.applied == ("memory", "pids") and cgset.missing == {}
    assert cgset.fallback_rlimit_as == 0
    limit_file = "memory.max" if cgset.version == "v2" else "memory.limit_in_bytes"
    assert int((_dir(cgset, "memory") / limit_file).read_text()) == 64 * MiB
    try:
        limited = subprocess.run([sys.executable, "-c", ALLOCATE], preexec_fn=cgset.preexec_fn(),
                                 capture_output=True, text=True)  # fmt: skip
        assert limited.returncode == -signal.SIGKILL, limited
        events = "memory.events" if cgset.version == "v2" else "memory.oom_control"
        assert _counter(_dir(cgset, "memory") / events, "oom_kill") >= 1
    finally:
        assert cgset.release()
    control = subprocess.run([sys.executable, "-c", ALLOCATE], capture_output=True, text=True)
    assert control.returncode == 0 and control.stdout == f"allocated {128 * MiB}\n"


@real_cgroups
def test_forking_past_the_process_limit_fails_and_a_control_child_forks_on(parent: str):
    cgset = create("pids-test", Limits(None, 20), root=ROOT, parent=parent)
    assert cgset.applied == ("pids",)
    assert (_dir(cgset, "pids") / "pids.max").read_text().strip() == "20"
    try:
        limited = subprocess.run([sys.executable, "-c", FORK], preexec_fn=cgset.preexec_fn(),
                                 capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        assert cgset.release()
    # the child itself is one of the 20
    assert limited.stdout.split() == ["19", str(errno.EAGAIN)]
    control = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True,
                             check=True)  # fmt: skip
    assert control.stdout.split() == ["40", "0"]


@real_cgroups
def test_a_child_under_a_cpu_quota_is_throttled(parent: str):
    cgset = create("cpu-test", Limits(None, None, cpu=0.2), root=ROOT, parent=parent)
    assert cgset.applied == ("cpu",) and cgset.describe() == "0.2 CPUs"
    directory = _dir(cgset, "cpu")
    if cgset.version == "v2":
        assert (directory / "cpu.max").read_text().split() == ["20000", "100000"]
    else:
        assert (directory / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (directory / "cpu.cfs_period_us").read_text().strip() == "100000"
    try:
        # 150 ms of CPU at 20 ms per 100 ms period cannot run without being throttled
        spun = subprocess.run([sys.executable, "-c", SPIN], preexec_fn=cgset.preexec_fn(),
                              capture_output=True, text=True, check=True)  # fmt: skip
        assert spun.stdout == "done\n"
        assert _counter(directory / "cpu.stat", "nr_throttled") >= 1
    finally:
        assert cgset.release()


@real_cgroups
def test_release_kills_what_is_left_and_removes_the_directories(parent: str):
    cgset = create("release-test", Limits(64 * MiB, 20, 1.5), root=ROOT, parent=parent)
    assert cgset.applied == ("memory", "pids", "cpu")
    assert cgset.describe() == "memory 64 MB, 20 processes, 1.5 CPUs"
    child = subprocess.Popen([sys.executable, "-c", HOLD], preexec_fn=cgset.preexec_fn(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for procs in cgset.procs_files:  # it joined every cgroup of the set
            assert str(child.pid) in Path(procs).read_text().split()
        used = cgset.memory_current()
        assert used is not None and used >= 16 * MiB
        dirs = [Path(d) for d in cgset.dirs]
        assert cgset.release() is True
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert cgset.dirs == [] and not any(d.exists() for d in dirs)
        assert all(d.parent.is_dir() for d in dirs)  # the parents stay
        assert cgset.release() is True  # idempotent
        assert cgset.memory_current() is None
    finally:
        child.kill()
        child.wait()


@real_cgroups
def test_saved_directories_are_released_after_a_restart(parent: str):
    cgset = create("restart-test", Limits(64 * MiB, 20), root=ROOT, parent=parent)
    child = subprocess.Popen([sys.executable, "-c", HOLD], preexec_fn=cgset.preexec_fn(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        saved = list(cgset.dirs)  # what a spawner keeps in its state
        restored = CgroupSet.from_dirs(saved)
        assert restored.procs_files == cgset.procs_files
        assert restored.release() is True
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert not any(Path(d).exists() for d in saved)
        assert CgroupSet.from_dirs(saved).release() is True  # already gone: a no-op
    finally:
        child.kill()
        child.wait()


@real_cgroups
def test_create_empties_a_same_named_set_left_by_a_dead_hub(parent: str):
    first = create("left-behind", Limits(64 * MiB, 20), root=ROOT, parent=parent)
    orphan = subprocess.Popen([sys.executable, "-c", HOLD], preexec_fn=first.preexec_fn(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert orphan.stdout is not None and orphan.stdout.readline() == "ready\n"
        again = create("left-behind", Limits(64 * MiB, 20), root=ROOT, parent=parent)
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert again.dirs == first.dirs
        assert all(Path(p).read_text().split() == [] for p in again.procs_files)
        assert again.release()
    finally:
        orphan.kill()
        orphan.wait()


@real_cgroups
def test_from_dirs_refuses_a_hierarchy_root_or_a_parent(parent: str):
    cgset = create("refuse-test", Limits(None, 20), root=ROOT, parent=parent)
    try:
        hierarchy = Path(_dir(cgset, "pids")).parent.parent
        for directory in (hierarchy, hierarchy / parent, Path("/tmp")):
            with pytest.raises(ValueError, match="not a per-tree cgroup directory"):
                CgroupSet.from_dirs([str(directory)])
    finally:
        assert cgset.release()


def _unified() -> Path | None:
    for candidate in (Path(ROOT), Path(ROOT, "unified")):
        if detect(str(candidate)) == "v2" and os.access(candidate, os.W_OK):
            return candidate
    return None


@requires(_unified(), reason=f"no writable cgroup v2 hierarchy at {ROOT} or {ROOT}/unified")
def test_v2_plumbing_on_the_real_unified_hierarchy(parent: str):
    """Joining, cgroup.kill and removal on a real cgroup2 mount; the limits this mount
    cannot hold (here: controllers bound to v1) are reported, each with its reason."""
    unified = _unified()
    assert unified is not None
    cgset = create("v2-test", Limits(64 * MiB, 20, 0.5), root=str(unified), parent=parent)
    assert cgset.version == "v2"
    assert set(cgset.applied) | set(cgset.missing) == {"memory", "pids", "cpu"}
    for controller, why in cgset.missing.items():
        assert controller in why and str(unified) in why
    assert cgset.fallback_rlimit_as == (0 if "memory" in cgset.applied else 64 * MiB)
    (directory,) = cgset.dirs
    child = subprocess.Popen([sys.executable, "-c", HOLD], preexec_fn=cgset.preexec_fn(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        membership = Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
        assert f"0::/{Path(directory).relative_to(unified)}" in membership
        assert cgset.release() is True  # cgroup.kill
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert not Path(directory).exists()
    finally:
        child.kill()
        child.wait()


# --- without cgroups: RLIMIT_AS ---------------------------------------------------------------


def test_without_a_hierarchy_memory_falls_back_to_rlimit_as(tmp_path: Path):
    cgset = create("none-test", Limits(64 * MiB, 20), root=str(tmp_path), parent="bindery")
    assert (cgset.version, cgset.dirs, cgset.applied) == ("none", [], ())
    assert set(cgset.missing) == {"memory", "pids"}
    assert cgset.fallback_rlimit_as == 64 * MiB
    assert cgset.describe() == "memory 64 MB per process, no process limit"
    limited = subprocess.run([sys.executable, "-c", ALLOCATE], preexec_fn=cgset.preexec_fn(),
                             capture_output=True, text=True)  # fmt: skip
    assert limited.returncode == 1 and "MemoryError" in limited.stderr
    control = subprocess.run([sys.executable, "-c", ALLOCATE], capture_output=True, text=True)
    assert control.returncode == 0
    assert cgset.release() is True and cgset.memory_current() is None


# --- the v2 writer, on a tree laid out like a v2 hierarchy --------------------------------


def _v2_tree(root: Path, *, swap: bool = True, available: str = "cpuset cpu io memory pids",
             enabled: str = "") -> Path:  # fmt: skip
    """A v2 hierarchy as the kernel shows it: the root, the parent ``bindery`` and the leaf
    with the control files that appear once the parent passes memory, pids and cpu down."""
    (root / "cgroup.controllers").write_text(available + "\n")
    (root / "cgroup.subtree_control").write_text(enabled)
    (root / "cgroup.procs").write_text("1\n")
    parent = root / "bindery"
    parent.mkdir()
    for name, text in [("cgroup.controllers", available), ("cgroup.subtree_control", enabled),
                       ("cgroup.procs", "")]:  # fmt: skip
        (parent / name).write_text(text)
    leaf = parent / "bob-1a2b3c"
    leaf.mkdir()
    files = {"cgroup.procs": "", "memory.max": "max\n", "memory.current": "12345\n",
             "pids.max": "max\n", "cpu.max": "max 100000\n"}  # fmt: skip
    if swap:
        files["memory.swap.max"] = "max\n"
    for name, text in files.items():
        (leaf / name).write_text(text)
    return leaf


def test_v2_writer_enables_the_controllers_and_writes_the_limits(tmp_path: Path):
    """Against a tmp_path tree laid out like cgroup v2 (v2 cannot be reached here)."""
    leaf = _v2_tree(tmp_path)
    cgset = create("bob-1a2b3c", Limits(2 * 1024**3, 256, 1.5), root=str(tmp_path))
    assert cgset.version == "v2" and detect(str(tmp_path)) == "v2"
    assert cgset.applied == ("memory", "pids", "cpu") and cgset.missing == {}
    assert cgset.dirs == [str(leaf)] and cgset.procs_files == [str(leaf / "cgroup.procs")]
    for level in (tmp_path, tmp_path / "bindery"):  # every ancestor passes them down
        assert (level / "cgroup.subtree_control").read_text() == "+memory\n+pids\n+cpu\n"
    assert (leaf / "memory.max").read_text() == str(2 * 1024**3)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "256"
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    assert cgset.describe() == "memory 2 GB, 256 processes, 1.5 CPUs"
    assert cgset.fallback_rlimit_as == 0
    assert cgset.memory_current() == 12345
    assert sorted(p.name for p in leaf.iterdir()) == [
        "cgroup.procs", "cpu.max", "memory.current", "memory.max", "memory.swap.max", "pids.max",
    ]  # fmt: skip


def test_v2_writer_leaves_enabled_controllers_and_an_absent_swap_file_alone(tmp_path: Path):
    """Against a tmp_path tree laid out like cgroup v2 (v2 cannot be reached here)."""
    leaf = _v2_tree(tmp_path, swap=False, enabled="cpu memory pids\n")
    cgset = create("bob-1a2b3c", Limits(64 * MiB, 20), root=str(tmp_path))
    assert cgset.applied == ("memory", "pids")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
    assert (tmp_path / "bindery" / "cgroup.subtree_control").read_text() == "cpu memory pids\n"
    assert not (leaf / "memory.swap.max").exists()  # never created: no swap accounting
    assert (leaf / "cpu.max").read_text() == "max 100000\n"  # no CPU limit asked for
    assert (leaf / "memory.max").read_text() == str(64 * MiB)


def test_v2_writer_reports_a_root_that_does_not_delegate_memory_and_pids(tmp_path: Path):
    """Against a tmp_path tree laid out like cgroup v2 (v2 cannot be reached here)."""
    leaf = _v2_tree(tmp_path, available="cpu io")
    cgset = create("bob-1a2b3c", Limits(2 * 1024**3, 256, 1.5), root=str(tmp_path))
    assert cgset.applied == ("cpu",)
    assert set(cgset.missing) == {"memory", "pids"}
    assert "memory controller is not available" in cgset.missing["memory"]
    assert cgset.fallback_rlimit_as == 2 * 1024**3
    assert cgset.describe() == "memory 2 GB per process, no process limit, 1.5 CPUs"
    assert (leaf / "memory.max").read_text() == "max\n"  # untouched
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu\n"


# --- names and arguments ----------------------------------------------------------------------


def test_safe_name_is_bounded_dns_safe_and_unique():
    label = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
    names = [safe_name("Bob", "session/1"), safe_name("bob", "session_1"),
             safe_name("x" * 300), safe_name("ünïcode", "../.."), safe_name("")]  # fmt: skip
    for name in names:
        assert len(name) <= 63
        assert re.fullmatch(label, name), name
    assert names[0].startswith("bob-session-1-") and names[0] != names[1]
    assert safe_name("Bob", "session/1") == names[0]  # deterministic
    assert len(safe_name("x" * 300, max_length=20)) == 20


def test_create_refuses_names_that_are_not_plain(tmp_path: Path):
    for name, parent in [("../etc", "bindery"), ("a/b", "bindery"), (".", "bindery"),
                         ("ok", ""), ("ok", "../up"), ("ok", "a//b")]:  # fmt: skip
        with pytest.raises(ValueError):
            create(name, Limits(64 * MiB, 20), root=str(tmp_path), parent=parent)


def test_limits_must_be_positive():
    for bad in [dict(memory_bytes=0, max_processes=1), dict(memory_bytes=1, max_processes=-1),
                dict(memory_bytes=1, max_processes=1, cpu=0.0)]:  # fmt: skip
        with pytest.raises(ValueError, match="must be positive"):
            Limits(**bad)


def test_require_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch):
    from apps.testing import available

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(False, "no cgroups")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        available(False, "no cgroups")
    require(True, "present")  # nothing happens
    assert available(True, "present") is True
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no cgroups"):
        require(False, "no cgroups")
    assert available(False, "no cgroups") is False
