"""A workshop from creation to its guests being forgotten, all real: a git server on
127.0.0.1 serves the repository, the local builder pre-builds it with uv (offline, shared
cache), a Celery worker (a thread, real Redis broker) runs the builds, launches, stops and
tending, and a JupyterHub of this module's own runs the warm and the seated servers.

Servers are few (two warm, one cold, one refill) and the build is shared through the uv
cache: the module takes well under two minutes on a 2-core machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.builds.selectors import environment_keys_in_use
from apps.builds.tests.helpers import envs_beside_the_cache
from apps.quotas.models import Quota
from apps.sessions import services as sessions
from apps.sessions.models import Session
from apps.sessions.tests.conftest import (
    Hub,
    _start_hub,
    _stop_hub,
    bwrap_installed,
    hub_user_status,
    server_processes,
    wait_for,
)
from apps.testing import available
from apps.workshops import selectors, services
from apps.workshops.models import Seat, Workshop
from portal.celery import app as celery_app

pytestmark = [pytest.mark.hub, pytest.mark.build, pytest.mark.django_db(transaction=True)]

REQUIREMENTS = "tabulate==0.9.0\n"  # in the shared test cache (bin/warm-test-cache)


@pytest.fixture(scope="module")
def flow_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of this module's own (sandboxed where possible), its environments beside the
    shared uv cache so the pre-build hardlinks instead of copying."""
    root = tmp_path_factory.mktemp("workshop-flow")
    with envs_beside_the_cache() as envs:
        hub = _start_hub(root, envs / "unused", "hub", {"BINDERY_ENVS_DIR": str(envs)})
        hub.dirs["envs"] = envs
        try:
            yield hub
        finally:
            _stop_hub(hub)


@pytest.fixture
def portal(flow_hub: Hub, git_host: Any, settings: Any) -> Iterator[Hub]:
    """Settings pointing at the hub, offline builds, a small warm pool, guests forgotten as
    soon as the workshop closes, and a live Celery worker."""
    hub = flow_hub
    settings.BINDERY_HUB_API_URL = hub.api_url
    settings.BINDERY_HUB_URL = hub.public_url
    settings.BINDERY_HUB_TOKEN = hub.token
    settings.BINDERY_HUB_DIR = hub.dirs["hub"]
    for name in ("envs", "checkouts", "sessions", "volumes"):
        setattr(settings, f"BINDERY_{name.upper()}_DIR", hub.dirs[name])
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_IDLE_TIMEOUT = 600
    settings.BINDERY_WORKSHOP_WARM_MAX = 2
    settings.BINDERY_WORKSHOP_WARM_STARTS = 2
    settings.BINDERY_WORKSHOP_GUEST_RETENTION = 0
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield hub


def wait_session(session_id: int, status: str, timeout: float = 90) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status == "failed" and status != "failed":
            pytest.fail(f"session {session_id} failed: {session.error_code} "
                        f"{session.error_message}")  # fmt: skip
        return session if session.status == status else None

    found: Session = wait_for(done, timeout, f"session {session_id} to be {status}")
    return found


def warm_sessions(workshop: Workshop) -> list[Session]:
    return list(
        Session.objects.filter(workshop=workshop, seat__isnull=True, status__in=Session.ACTIVE)
    )


def server_base(session: Session) -> str:
    """The server's URL on the hub's proxy, without the urlpath."""
    return session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"


def status_with(session: Session, token: str) -> int:
    response = requests.get(f"{server_base(session)}/api/status", allow_redirects=False,
                            headers={"Authorization": f"token {token}"}, timeout=10)  # fmt: skip
    return response.status_code


def sandbox_uid(session: Session) -> int:
    """The host uid the session's server runs as."""
    pids = server_processes(session.hub_user, session.server_name)
    assert pids, f"no server process for session {session.pk}"
    for line in Path(f"/proc/{pids[0]}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_create_prebuild_warm_join_stop_close_forget(portal, git_host, settings):
    instructor = UserFactory(username="teacher", email="teacher@example.org")
    Quota.objects.create(scope="user", user=instructor, values={"sessions": 20})
    repo = git_host.create_repo(
        f"class/intro-{uuid.uuid4().hex[:8]}",
        {"requirements.txt": REQUIREMENTS, "index.ipynb": "{}", "README.md": "# intro\n"},
    )
    now = timezone.now()
    # opens in a minute: inside the warm lead time, so the pool warms before the doors open
    workshop = services.create_workshop(
        instructor, title="Intro to tables", repo_url=repo.url, ref="main",
        opens_at=now + timedelta(minutes=1), closes_at=now + timedelta(hours=2), seats=4,
        guests=True, session_minutes=60,
    )  # fmt: skip
    assert workshop.resolved_ref == repo.head and len(workshop.code) == 6

    # the pre-build runs on the worker and becomes ready; its environment is protected
    build = wait_for(lambda: (b := Build.objects.get(pk=workshop.build_id)).is_terminal and b,
                     90, "the pre-build")  # fmt: skip
    assert build.status == Build.Status.READY, (build.error_code, build.error_message)
    assert build.resolved_ref == repo.head and build.environment_key
    assert Path(build.result["environment_path"]).is_dir()
    assert build.environment_key in environment_keys_in_use()
    workshop.refresh_from_db()
    assert workshop.status == Workshop.Status.SCHEDULED
    with pytest.raises(services.WorkshopNotOpen):
        services.join(workshop.code, name="Too early")

    # the finished build filled the pool (build_ended → tend on the worker); beat's round
    # finds nothing more to start: the pool is at BINDERY_WORKSHOP_WARM_MAX
    wait_for(lambda: len(warm_sessions(workshop)) == 2, 30, "two warm servers to be started")
    warm = [wait_session(s.pk, "ready") for s in warm_sessions(workshop)]
    assert services.tend()["warmed"] == {}
    assert all(s.user is None and s.anonymous_owner.startswith("warm-") for s in warm)
    client = portal.client()
    assert all(client.server_status(s.hub_user, s.server_name) == "ready" for s in warm)

    # the doors open; the machine holds no more warm servers than are running
    opened = {"opens_at": timezone.now() - timedelta(seconds=1)}
    workshop = services.update_workshop(instructor, workshop, opened)
    assert workshop.status == Workshop.Status.OPEN
    settings.BINDERY_WORKSHOP_WARM_MAX = 2 - len(warm)  # so the third join finds none
    ada = services.join(f" {workshop.code.lower()[:3]}-{workshop.code[3:]} ", name="Ada")
    bob = services.join(workshop.code, name="Bob")
    assert (ada.warm, bob.warm) == (True, True)
    assert {ada.session.pk, bob.session.pk} == {s.pk for s in warm}
    assert ada.guest_owner and bob.guest_owner and ada.guest_owner != bob.guest_owner
    ada_again = services.join(workshop.code, name="Ada", guest_owner=ada.guest_owner)
    assert ada_again.rejoined and ada_again.seat.pk == ada.seat.pk
    assert ada_again.session.pk == ada.session.pk
    carol_user = UserFactory(username="carol", email="carol@example.org")
    carol = services.join(workshop.code, user=carol_user)
    assert not carol.warm and carol.guest_owner == ""
    cold = wait_session(carol.session.pk, "ready")
    assert cold.user == carol_user and cold.hub_user == carol_user.hub_name
    names = [(s.name, s.user_id, s.session_id) for s in selectors.roster(workshop)]
    assert names == [("Ada", None, ada.session.pk), ("Bob", None, bob.session.pk),
                     (carol_user.get_full_name() or "carol@example.org", carol_user.pk,
                      cold.pk)]  # fmt: skip

    # each attendee's server answers with their own token, through the hub's proxy
    seated = {who: Session.objects.get(pk=j.session.pk) for who, j in
              (("ada", ada), ("bob", bob), ("carol", carol))}  # fmt: skip
    tokens = {who: sessions.session_token(s) for who, s in seated.items()}
    assert seated["ada"].anonymous_owner == ada.guest_owner and seated["ada"].user is None
    for who, session in seated.items():
        assert session.status == "ready" and tokens[who]
        assert status_with(session, tokens[who]) == 200, who
    # ...and one guest's token does not open another guest's (nor the user's) server
    assert status_with(seated["bob"], tokens["ada"]) in (302, 401, 403)
    assert status_with(seated["carol"], tokens["bob"]) in (302, 401, 403)
    assert requests.get(f"{server_base(seated['ada'])}/api/status", allow_redirects=False,
                        timeout=10).status_code in (302, 401, 403)  # fmt: skip
    if available(bwrap_installed(), "bubblewrap is not installed: servers run as root"):
        uids = {who: sandbox_uid(session) for who, session in seated.items()}
        assert len(set(uids.values())) == 3 and 0 not in uids.values(), uids

    # the pool refills for the seat still free once the machine has room again
    settings.BINDERY_WORKSHOP_WARM_MAX = 2
    assert services.tend()["warmed"] == {workshop.pk: 1}  # one seat left: one warm server
    refill = wait_session(warm_sessions(workshop)[0].pk, "ready")

    # the instructor stops one attendee: the stop task stops the server on the hub
    services.stop_seat(instructor, workshop, Seat.objects.get(pk=bob.seat.pk))
    wait_session(bob.session.pk, "stopped", timeout=60)
    assert client.server_status(seated["bob"].hub_user, seated["bob"].server_name) == "stopped"
    assert status_with(seated["bob"], tokens["bob"]) != 200
    # bob's server was a warm one: its hub user was its own, and went with it (ada's stays)
    assert hub_user_status(portal, seated["bob"].hub_user) == 404
    assert hub_user_status(portal, seated["ada"].hub_user) == 200

    # closing stops every session, the warm one too; the environment may be pruned again
    services.close_workshop(instructor, workshop)
    for session in (seated["ada"], cold, refill):
        wait_session(session.pk, "stopped", timeout=60)
        assert client.server_status(session.hub_user, session.server_name) == "stopped"
    workshop.refresh_from_db()
    assert workshop.status == Workshop.Status.CLOSED
    with pytest.raises(services.WorkshopClosed):
        services.join(workshop.code, name="Late")
    assert build.environment_key not in environment_keys_in_use()
    # guests' seats go after the retention (0 here); the signed-in attendee's stays
    assert services.tend()["forgotten"] == 2
    assert list(workshop.seat_set.values_list("user_id", flat=True)) == [carol_user.pk]

    # a second workshop on the same commit reuses the environment: no build ends to start
    # its pool, so creating it asks for one (the worker's tend), and the warm server comes
    again = services.create_workshop(
        instructor, title="Intro again", repo_url=repo.url, ref="main", seats=1,
        opens_at=timezone.now() + timedelta(minutes=1),
        closes_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    assert again.build_id == build.pk
    wait_for(lambda: len(warm_sessions(again)) == 1, 30, "the reused environment's warm server")
    spare = wait_session(warm_sessions(again)[0].pk, "ready")
    services.close_workshop(instructor, again)
    wait_session(spare.pk, "stopped", timeout=60)
    assert hub_user_status(portal, spare.hub_user) == 404
