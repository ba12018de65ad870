"""A session launched with a CPU and a memory limit has them, as a kernel inside it sees.

All real: a user's quota (0.5 CPU, 768 MiB) set through the quota service, a launch through
``POST /api/v1/sessions/``, a uv build from a git server on 127.0.0.1, a Celery worker, the
test JupyterHub, BinderySpawner with bubblewrap and this machine's cgroups (v1 here; v2 reads
the same through ``cpu.max``/``memory.max``). The sandbox hides ``/sys/fs/cgroup``, so the
kernel measures the limits instead of reading them: CPU time of a busy loop against wall time,
and a child allocating past the memory limit (killed) next to a small one (works). The host
side reads the session's cgroup files. A second session of a user without a CPU limit and
with the default 2 GB is the control: the same loop gets a whole core, the same allocation
completes, so "limited" means "limited", not "slow machine" or "cannot allocate at all".
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from apps import cgroups
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import services as quotas
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import bwrap_installed, server_processes, wait_for
from apps.sessions.tests.jupyter import run_code
from apps.testing import requires
from portal.celery import app as celery_app
from portal.hubconfig import hub_config

MiB = 1024**2
CPU, MEMORY = 0.5, 768 * MiB
ROOT = cgroups.CGROUP_ROOT
VERSION = cgroups.detect(ROOT)


def _cgroups_writable() -> bool:
    if VERSION == "v1":
        return all(os.access(Path(ROOT, c), os.W_OK) for c in cgroups.CONTROLLERS)
    if VERSION == "v2":
        controllers = Path(ROOT, "cgroup.controllers").read_text().split()
        return os.access(ROOT, os.W_OK) and {"memory", "cpu"} <= set(controllers)
    return False


pytestmark = [
    pytest.mark.hub,
    pytest.mark.django_db(transaction=True),
    requires(bwrap_installed(), reason="bubblewrap is not installed"),
    requires(
        _cgroups_writable(),
        reason=f"no writable memory, pids and cpu cgroups at {ROOT} (root and cgroup v1, "
        "or a delegated v2, needed)",
    ),
]

# Run in a kernel: what it can see of its cgroups, CPU time over ~2 s of wall time of a busy
# loop (up to ``TRIES`` times, stopping once one reaches ``ENOUGH``: other load on the machine
# only ever lowers the fraction), and what a child process allocating ``SIZES`` MiB (touched,
# in 32 MiB steps) reaches and how it ends.
PROBE = r"""
import json, os, subprocess, sys, time
HOG = '''
import sys
held = []
for step in range(int(sys.argv[1]) // 32):
    held.append(b"x" * (32 << 20))
    print((step + 1) * 32, flush=True)
print("done", flush=True)
'''
def burn(seconds=2.0):
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < seconds:
        pass
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)
def hog(mib):
    done = subprocess.run([sys.executable, "-c", HOG, str(mib)], capture_output=True,
                          text=True, timeout=120)
    lines = done.stdout.split()
    reached = int(lines[-2] if lines[-1:] == ["done"] else (lines[-1] if lines else 0))
    return {"rc": done.returncode, "done": lines[-1:] == ["done"], "reached": reached,
            "memory_error": "MemoryError" in done.stderr}
report = {"cgroup_fs": os.path.isdir("/sys/fs/cgroup"),
          "proc_cgroup": open("/proc/self/cgroup").read().splitlines(),
          "cpu": [], "memory": {}, "files": {}}
while len(report["cpu"]) < TRIES and max(report["cpu"], default=0) < ENOUGH:
    report["cpu"].append(burn())
if report["cgroup_fs"]:  # a sandbox that shows its cgroups: read them as well
    for line in report["proc_cgroup"]:
        _, controllers, path = line.split(":", 2)
        bases = ["/sys/fs/cgroup/" + c for c in controllers.split(",") if c] or ["/sys/fs/cgroup"]
        for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us", "memory.limit_in_bytes",
                     "cpu.max", "memory.max"):
            for base in bases:
                file = base + path + "/" + name
                if os.path.isfile(file):
                    report["files"][name] = open(file).read().strip()
for mib in SIZES:
    report["memory"][str(mib)] = hog(mib)
print(json.dumps(report))
"""


def probe(session: Session, *, tries: int, enough: float, sizes: list[int]) -> dict[str, Any]:
    base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
    code = f"TRIES = {tries}\nENOUGH = {enough}\nSIZES = {sizes!r}\n" + PROBE
    status, output = run_code(base, services.session_token(session), code, timeout=300)
    assert status == "ok", output
    return dict(json.loads(output.strip().splitlines()[-1]))


def host_limits(session: Session) -> dict[str, Any]:
    """The limits in the cgroup files of the session's server processes, found from their
    ``/proc/<pid>/cgroup`` on the host: ``cpu`` (quota µs, period µs) or None, ``memory``
    bytes or None, and the cgroup paths (all processes in the same ones)."""
    pids = server_processes(session.hub_user, session.server_name)
    assert pids, "no server process on the host"
    placed = set()
    for pid in pids:
        entries = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        placed.add(tuple(sorted(line.split(":", 1)[1] for line in entries)))
    assert len(placed) == 1, placed  # every server process is in the same cgroups
    paths = {}
    for entry in next(iter(placed)):
        controllers, path = entry.split(":", 1)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    found: dict[str, Any] = {"paths": paths, "cpu": None, "memory": None}
    if VERSION == "v2":
        directory = Path(ROOT + paths[""])
        quota, period = (directory / "cpu.max").read_text().split()
        found["cpu"] = None if quota == "max" else (int(quota), int(period))
        memory = (directory / "memory.max").read_text().strip()
        found["memory"] = None if memory == "max" else int(memory)
    else:
        cpu_dir = Path(ROOT, "cpu" + paths["cpu"])
        quota_us = int((cpu_dir / "cpu.cfs_quota_us").read_text())
        period_us = int((cpu_dir / "cpu.cfs_period_us").read_text())
        found["cpu"] = None if quota_us == -1 else (quota_us, period_us)
        limit = int(Path(ROOT, "memory" + paths["memory"], "memory.limit_in_bytes").read_text())
        found["memory"] = None if limit >= 2**62 else limit
    return found


@pytest.fixture
def portal(hub, hub_settings, git_host, settings):
    """Settings pointing at the test hub, offline builds, and a live Celery worker."""
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_IDLE_TIMEOUT = 600
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield hub


def wait_status(session_id: int, status: str, timeout: float = 240) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status == status:
            return session
        if session.status == "failed":
            build = Build.objects.get(pk=session.build_id)
            pytest.fail(f"launch failed: {session.error_code} {session.error_message} "
                        f"(build: {build.error_message})")  # fmt: skip
        return None

    return wait_for(done, timeout, f"session {session_id} to be {status}")


def test_a_session_has_its_cpu_and_memory_limit_inside(portal, token_client, git_host):
    repo = git_host.create_repo(f"org/limits-{uuid.uuid4().hex[:8]}",
                                {"requirements.txt": "", "README.md": "# limits\n"})  # fmt: skip
    staff = UserFactory(is_staff=True)
    limited, free = UserFactory(), UserFactory()
    assert quotas.set_user_quota(staff, limited, {"cpu": CPU, "memory": MEMORY})["cpu"] == CPU
    launched = {}
    for user in (limited, free):
        response = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url},
                                           format="json")  # fmt: skip
        assert response.status_code == 201, response.json()
        launched[user.pk] = response.json()
    assert (launched[limited.pk]["cpu"], launched[limited.pk]["memory_bytes"]) == (CPU, MEMORY)
    assert launched[free.pk]["cpu"] is None  # the site sets no CPU limit by default
    assert launched[free.pk]["memory_bytes"] == 2 * 1024**3
    session = wait_status(launched[limited.pk]["id"], "ready")
    control = wait_status(launched[free.pk]["id"], "ready")
    assert (session.cpu, session.memory_bytes) == (CPU, MEMORY)
    parent = hub_config()["BinderySpawner"]["cgroup_parent"]
    name = cgroups.safe_name(session.hub_user, session.server_name)
    try:
        # the host: the server's processes are in cgroups holding the session's limits
        held = host_limits(session)
        for controller in ("cpu", "memory") if VERSION == "v1" else ("",):
            assert held["paths"][controller] == f"/{parent}/{name}", held["paths"]
        assert held["cpu"] == (50_000, 100_000)  # 0.5 of each 100 ms period
        assert held["memory"] == MEMORY
        unlimited = host_limits(control)
        assert unlimited["cpu"] is None and unlimited["memory"] == 2 * 1024**3

        # inside: a kernel of each session burns CPU and allocates
        inside = probe(session, tries=3, enough=2.0, sizes=[256, 1024])  # every try counts
        outside = probe(control, tries=5, enough=0.9, sizes=[1024])
        print(f"\ncgroup {VERSION}; /sys/fs/cgroup in the sandbox: {inside['cgroup_fs']}; "
              f"CPU time / wall time with {CPU} CPU: {inside['cpu']}, without: "
              f"{outside['cpu']}; {MEMORY // MiB} MiB session: {inside['memory']}; "
              f"2 GB session: {outside['memory']}")  # fmt: skip
        if inside["cgroup_fs"]:  # the sandbox shows them: the files say the same
            files = inside["files"]
            if VERSION == "v1":
                assert (files["cpu.cfs_quota_us"], files["cpu.cfs_period_us"]) == (
                    "50000", "100000")  # fmt: skip
                assert files["memory.limit_in_bytes"] == str(MEMORY)
            else:
                assert (files["cpu.max"], files["memory.max"]) == ("50000 100000", str(MEMORY))
        # CPU: never more than about half a core (and not far under it when the machine
        # lets it); the control gets a whole one
        assert 0.3 <= max(inside["cpu"]) <= 0.7, inside["cpu"]
        assert max(outside["cpu"]) >= 0.9, outside["cpu"]
        # memory: a small allocation works, one past the limit is killed before it gets
        # there (the server and the kernel use part of the 768 MiB), the control's completes
        small, big = inside["memory"]["256"], inside["memory"]["1024"]
        assert small["done"] and small["rc"] == 0, small
        assert not big["done"] and (big["rc"] == -9 or big["memory_error"]), big
        assert big["reached"] < MEMORY // MiB, big
        assert outside["memory"]["1024"]["done"] and outside["memory"]["1024"]["rc"] == 0
        session.refresh_from_db()
        assert session.status == "ready"  # only the child that went over was killed
    finally:
        for running in (session, control):
            services.request_stop(running)
        for running in (session, control):
            wait_status(running.pk, "stopped", timeout=60)
    assert not Path(ROOT, "cpu" if VERSION == "v1" else "", parent, name).exists()
