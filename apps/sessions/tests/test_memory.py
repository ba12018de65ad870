"""What a running session uses: its cgroup's working set (``apps.cgroups.memory_in_use``), read
by ``services.session_memory_used``, in the sessions API (``memory_used``) and on the
dashboard ("312 MB of 2.0 GB").

Real cgroups of this machine (cgroup v1 here, as root; a delegated v2 host works the same):
a child joins the cgroup a session's server would have, allocates, says so on its stdout,
and holds until its stdin closes. Without a writable hierarchy these tests skip (fail in CI).
One test starts a real server through the test JupyterHub, so the cgroup the portal reads is
the one the spawner made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps import cgroups
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.models import Session
from apps.testing import requires
from portal.hubconfig import hub_config

MiB = 1024**2
ROOT = cgroups.CGROUP_ROOT
_MEMORY_DIR = Path(ROOT, "memory") if cgroups.detect(ROOT) == "v1" else Path(ROOT)
real_cgroups = requires(
    cgroups.detect(ROOT) in ("v1", "v2") and os.access(_MEMORY_DIR, os.W_OK),
    reason=f"no writable memory cgroup at {ROOT} (root and cgroup v1 or delegated v2 needed)",
)
# Allocates (and touches) ``size`` MiB, and optionally writes ``shm`` MiB into a tmpfs file;
# says "ready" once it holds them, holds until stdin closes.
HOLD = """
import sys
size, shm = int(sys.argv[1]), int(sys.argv[2])
data = bytearray(size << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
if shm:
    with open(sys.argv[3], "wb") as f:
        f.write(b"x" * (shm << 20))
print("ready", flush=True)
sys.stdin.read()
"""


class Holder:
    """A child in ``cgset`` holding memory until :meth:`stop`."""

    def __init__(self, cgset: cgroups.CgroupSet, size_mib: int, shm_mib: int = 0) -> None:
        self.shm = Path("/dev/shm", f"bindery-test-{uuid.uuid4().hex}")
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(size_mib), str(shm_mib), str(self.shm)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=cgset.preexec_fn(),
        )  # fmt: skip
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.shm.unlink(missing_ok=True)


def _remove_parent(parent: str) -> None:
    bases = [Path(ROOT, c) for c in cgroups.CONTROLLERS] + [Path(ROOT)]
    for base in bases:
        top = base / parent
        if top.is_dir():
            children = [str(p) for p in top.iterdir() if p.is_dir()]
            assert cgroups.CgroupSet.from_dirs(children).release()
            top.rmdir()


@pytest.fixture
def parent() -> Iterator[str]:
    name = f"bindery-test-{uuid.uuid4().hex[:12]}"
    yield name
    _remove_parent(name)


def _raw(cgset: cgroups.CgroupSet, name: str) -> int:
    """A counter of the tree's memory cgroup: the usage, or a key of memory.stat."""
    directory = next(d for d in cgset.dirs if cgset.version == "v2" or "/memory/" in d)
    if name == "usage":
        file = "memory.current" if cgset.version == "v2" else "memory.usage_in_bytes"
        return int(Path(directory, file).read_text())
    stat = dict(line.split() for line in Path(directory, "memory.stat").read_text().splitlines())
    return int(stat[name])


# --- apps.cgroups.memory_in_use ---------------------------------------------------------------


@real_cgroups
def test_the_reading_is_what_the_tree_holds_and_tmpfs_counts(parent):
    cgset = cgroups.create("reader", cgroups.Limits(512 * MiB, 20), parent=parent)
    assert "memory" in cgset.applied
    try:
        idle = cgroups.memory_in_use("reader", parent=parent)
        assert idle is not None and idle < 8 * MiB  # nothing in it yet
        holder = Holder(cgset, size_mib=96, shm_mib=64)
        try:
            used = cgroups.memory_in_use("reader", parent=parent)
            assert used is not None
            # 96 MiB allocated + 64 MiB of tmpfs + the interpreter, well under the limit
            assert 160 * MiB <= used < 512 * MiB, used
            # tmpfs is "cache" on v1: subtracting the cache would hide the 64 MiB that count
            # towards the limit; the working set keeps it
            if cgset.version == "v1":
                assert _raw(cgset, "usage") - _raw(cgset, "total_cache") < used - 60 * MiB
            assert used <= _raw(cgset, "usage")
        finally:
            holder.stop()
        after = cgroups.memory_in_use("reader", parent=parent)
        assert after is not None and after < used - 150 * MiB  # given back when it exits
    finally:
        assert cgset.release()
    assert cgroups.memory_in_use("reader", parent=parent) is None  # gone: no reading


def test_no_reading_without_such_a_cgroup(tmp_path):
    assert cgroups.memory_in_use("never-made", parent=f"bindery-test-{uuid.uuid4().hex}") is None
    assert cgroups.memory_in_use("x", parent="p", root=str(tmp_path)) is None  # no hierarchy


@pytest.mark.parametrize("name, parent", [("..", "p"), ("a/b", "p"), ("x", "../memory"),
                                          ("x", "p/"), ("x", ""), ("", "p")])  # fmt: skip
def test_a_name_that_is_not_plain_is_refused(name, parent):
    with pytest.raises(ValueError):
        cgroups.memory_in_use(name, parent=parent)


# --- the session's reading, in the API and on the dashboard -----------------------------------


@pytest.fixture
def hub_dir(settings: Any, tmp_path: Path) -> Iterator[str]:
    """A hub directory of this test's own, so its cgroup parent is this test's own; the
    parent, as the hub's config names it."""
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    parent = hub_config()["BinderySpawner"]["cgroup_parent"]
    yield parent
    _remove_parent(parent)


def make_session(user: Any, status: str = "ready") -> Session:
    build = Build.objects.create(
        provider="gh", spec="org/ocean-model/main", repo_url="https://github.com/org/ocean-model",
        repo_slug="ocean-model", display_name="org/ocean-model", resolved_ref="a" * 40,
        resolved={}, build_key="k", status="ready", requested_by=user,
    )  # fmt: skip
    return Session.objects.create(
        user=user, build=build, hub_user=user.hub_name, provider="gh",
        spec="org/ocean-model/main", status=status, memory_bytes=2 * 1024**3,
    )  # fmt: skip


def server_cgroups(session: Session, parent: str) -> cgroups.CgroupSet:
    """The cgroups the spawner makes for this session's server (BinderySpawner's naming)."""
    return cgroups.create(
        cgroups.safe_name(session.hub_user, session.server_name),
        cgroups.Limits(session.memory_bytes, 64),
        parent=parent,
    )


@real_cgroups
@pytest.mark.django_db
def test_a_running_sessions_use_is_in_the_api_and_on_the_dashboard(client, token_client, hub_dir):
    user = UserFactory()
    running, starting = make_session(user, "ready"), make_session(user, "launching")
    cgset = server_cgroups(running, hub_dir)
    holder = Holder(cgset, size_mib=80)
    try:
        used = services.session_memory_used(running)
        assert used is not None and 80 * MiB <= used < 400 * MiB
        assert services.session_memory_used(starting) is None  # only running servers are read

        api = token_client(user)
        body = api.get("/api/v1/sessions/").json()
        rows = {row["id"]: row for row in body["results"]}
        assert 80 * MiB <= rows[running.pk]["memory_used"] < 400 * MiB
        assert rows[running.pk]["memory_bytes"] == 2 * 1024**3  # the limit, as before
        assert rows[starting.pk]["memory_used"] is None
        detail = api.get(f"/api/v1/sessions/{running.pk}/").json()
        assert 80 * MiB <= detail["memory_used"] < 400 * MiB

        client.force_login(user)
        page = client.get(reverse("sessions")).content.decode()
        row = re.search(rf'<tr data-session="{running.pk}">(.*?)</tr>', page, re.S)
        assert row is not None
        shown = re.search(r'data-slot="memory"[^>]*>(\d+)\xa0MB of 2.0\xa0GB</td>', row.group(1))
        assert shown is not None, row.group(1)
        assert 80 <= int(shown.group(1)) < 400
        other = re.search(rf'<tr data-session="{starting.pk}">(.*?)</tr>', page, re.S)
        assert other is not None and "limit 2.0\xa0GB" in other.group(1)

        # the page's script redraws from the same rows
        [polled] = [
            r for r in client.get(reverse("sessions"), {"format": "json"}).json()["active"]
            if r["id"] == running.pk
        ]  # fmt: skip
        assert 80 * MiB <= polled["memory_used_bytes"] < 400 * MiB
        assert re.fullmatch(r"\d+\xa0MB of 2\.0\xa0GB", polled["memory"])

        # reading costs no query: more running sessions, the same queries
        with CaptureQueriesContext(connection) as two:
            assert len(api.get("/api/v1/sessions/").json()["results"]) == 2
        for _ in range(3):
            server_cgroups(make_session(user, "ready"), hub_dir)
        with CaptureQueriesContext(connection) as five:
            assert len(api.get("/api/v1/sessions/").json()["results"]) == 5
        assert len(five.captured_queries) == len(two.captured_queries)
    finally:
        holder.stop()
        assert cgset.release()


@pytest.mark.django_db
def test_no_reading_when_the_server_has_no_cgroup(client, hub_dir):
    user = UserFactory()
    session = make_session(user, "ready")
    assert services.session_memory_used(session) is None
    client.force_login(user)
    [row] = client.get(reverse("sessions"), {"format": "json"}).json()["active"]
    assert row["memory_used_bytes"] is None
    assert row["memory"] == "limit 2.0\xa0GB"


# --- a real server, started by the hub's spawner ----------------------------------------------


@pytest.mark.hub
@real_cgroups
@pytest.mark.django_db
def test_the_portal_reads_the_cgroup_the_spawner_made(hub, hub_client, hub_settings, make_launch):
    user = UserFactory()
    session = make_session(user, "ready")
    launch = make_launch(session.hub_user, session.server_name)
    hub_client.ensure_user(session.hub_user)
    hub_client.start_server(session.hub_user, session.server_name, launch.user_options)
    try:
        events = list(hub_client.iter_progress(session.hub_user, session.server_name))
        assert events and events[-1].get("ready"), (events, hub.log()[-3000:])
        used = services.session_memory_used(session)
        # a Jupyter server and its start script: tens of MB, under its 1 GiB limit
        assert used is not None and 20 * MiB < used < 1024**3, used
    finally:
        hub_client.stop_server(session.hub_user, session.server_name, remove=True)
