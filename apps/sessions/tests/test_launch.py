"""Launches end to end, all real: a git server on 127.0.0.1 serves the repository, the local
builder builds it with uv (offline, shared cache), a Celery worker (in a thread, real Redis
broker) runs the tasks, and the test JupyterHub runs the sessions."""

from __future__ import annotations

import json
import os
import signal
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from asgiref.sync import sync_to_async
from celery.contrib.testing.worker import start_worker
from django.test import AsyncClient
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import server_processes, wait_for
from apps.sessions.tests.jupyter import run_code
from portal.celery import app as celery_app

pytestmark = [pytest.mark.hub, pytest.mark.django_db(transaction=True)]

REQUIREMENTS = "tabulate==0.9.0\n"


@pytest.fixture
def portal(hub, hub_settings, git_host, settings):
    """Settings pointing at the test hub, offline builds, and a live Celery worker."""
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_IDLE_TIMEOUT = 600
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield hub


@pytest.fixture
def repo(git_host):
    import uuid

    return git_host.create_repo(
        f"org/analysis-{uuid.uuid4().hex[:8]}",
        {"requirements.txt": REQUIREMENTS, "index.ipynb": "{}", "README.md": "# analysis\n"},
    )


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


def wait_status(session_id: int, *statuses: str, timeout: float = 240) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status in statuses:
            return session
        if session.status == "failed" and "failed" not in statuses:
            build = Build.objects.get(pk=session.build_id)
            pytest.fail(f"launch failed: {session.error_code} {session.error_message} "
                        f"(build: {build.error_message})")  # fmt: skip
        return None

    return wait_for(done, timeout, f"session {session_id} to be {'/'.join(statuses)}")


def open_base(session: Session) -> tuple[str, str]:
    """The server's base URL (without the urlpath) and the session's token."""
    base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
    return base, services.session_token(session)


def test_launch_build_run_persist_stop_relaunch(portal, token_client, alice, repo):
    client = token_client(alice)
    created = client.post(
        "/api/v1/sessions/",
        {"repo_url": repo.url, "ref": "main", "labpath": "index.ipynb"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    session = wait_status(created.json()["id"], "ready")
    detail = client.get(f"/api/v1/sessions/{session.pk}/").json()
    assert detail["status"] == "ready" and detail["phase"] == "ready"
    assert detail["url"].endswith(
        f"/user/{alice.hub_name}/{session.server_name}/lab/tree/index.ipynb"
    )
    assert "token" not in json.dumps(detail)  # the token is never in the API's answers

    base, token = open_base(session)
    status = requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"})
    assert status.status_code == 200
    assert requests.get(f"{base}/api/status").status_code in (302, 401, 403)  # needs the token

    # a kernel imports the repository's requirement and writes into the persistent volume
    state, out = run_code(base, token, "import tabulate, os\n"
                          "with open('persistent/notes.txt', 'w') as f: f.write('kept')\n"
                          "print(tabulate.__version__, os.environ['BINDER_REQUEST'])")  # fmt: skip
    assert state == "ok", out
    assert out.split() == ["0.9.0", f"v2/git/{quote(repo.url, safe='')}/main"]

    stopped = client.delete(f"/api/v1/sessions/{session.pk}/")
    assert stopped.status_code == 202
    wait_status(session.pk, "stopped", timeout=60)
    assert portal.client().server_status(alice.hub_name, session.server_name) == "stopped"
    assert not os.path.exists(os.path.join(portal.dirs["sessions"], session.server_name))
    assert requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}
                        ).status_code != 200  # fmt: skip

    # relaunch: the build is reused, and persistent/ still holds the file
    again = client.post("/api/v1/sessions/", {"repo_url": repo.url}, format="json").json()
    assert again["build"] == session.build_id
    second = wait_status(again["id"], "ready", timeout=60)
    base2, token2 = open_base(second)
    state, out = run_code(base2, token2, "print(open('persistent/notes.txt').read())")
    assert (state, out.strip()) == ("ok", "kept")
    services.request_stop(second)
    wait_status(second.pk, "stopped", timeout=60)


def test_outsider_cannot_see_or_stop_a_session(portal, token_client, alice, repo):
    session = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    outsider = token_client(UserFactory(username="mallory"))
    for method, path in [("get", ""), ("delete", ""), ("post", "keepalive/")]:
        response = getattr(outsider, method)(f"/api/v1/sessions/{session.pk}/{path}")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "NOT_FOUND"
    assert outsider.get("/api/v1/sessions/").json()["results"] == []
    session.refresh_from_db()
    assert session.status == "ready"
    assert portal.client().server_status(alice.hub_name, session.server_name) == "ready"
    services.request_stop(session)
    wait_status(session.pk, "stopped", timeout=60)


def test_idle_session_is_culled(portal, alice, repo, settings):
    session = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    assert services.cull_sessions() == []  # just started: not idle
    later = timezone.now() + timedelta(seconds=settings.BINDERY_IDLE_TIMEOUT + 5)
    assert services.cull_sessions(now=later) == [session.pk]
    culled = wait_status(session.pk, "stopped", timeout=60)
    assert portal.client().server_status(alice.hub_name, session.server_name) == "stopped"
    messages = list(culled.events.values_list("message", flat=True))
    assert any("idle" in m for m in messages)


def test_keepalive_counts_as_activity(portal, token_client, alice, repo, settings):
    session = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    later = timezone.now() + timedelta(seconds=settings.BINDERY_IDLE_TIMEOUT - 5)
    Session.objects.filter(pk=session.pk).update(
        last_activity=timezone.now() - timedelta(seconds=settings.BINDERY_IDLE_TIMEOUT)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: later)
        assert (
            token_client(alice).post(f"/api/v1/sessions/{session.pk}/keepalive/").status_code == 200
        )
    assert services.cull_sessions(now=later + timedelta(seconds=10)) == []
    services.request_stop(session)
    wait_status(session.pk, "stopped", timeout=60)


def test_killed_server_is_reconciled(portal, alice, repo):
    session = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    pids = server_processes(alice.hub_name, session.server_name)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    client = portal.client()
    wait_for(lambda: client.server_status(alice.hub_name, session.server_name) == "stopped",
             60, "the hub to notice the dead server")  # fmt: skip
    report = services.reconcile()
    assert session.pk in report["stopped"]
    session.refresh_from_db()
    assert session.status == "stopped"
    assert not os.path.exists(os.path.join(portal.dirs["sessions"], session.server_name))


def test_reconcile_stops_servers_the_portal_does_not_know(portal, alice, repo):
    session = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    Session.objects.filter(pk=session.pk).update(status="stopped")  # the portal forgot it
    report = services.reconcile()
    assert f"{alice.hub_name}/{session.server_name}" in report["orphans"]
    wait_for(lambda: portal.client().server_status(alice.hub_name, session.server_name)
             == "stopped", 30, "the orphan to stop")  # fmt: skip


def test_hub_down_fails_launch_clearly_and_changes_nothing(portal, alice, repo, settings):
    running = wait_status(services.launch(alice, repo_url=repo.url).pk, "ready")
    settings.BINDERY_HUB_API_URL = "http://127.0.0.1:1/hub/api"  # nothing listens there
    failed = wait_status(services.launch(alice, repo_url=repo.url).pk, "failed", timeout=60)
    assert failed.error_code == "HUB_UNAVAILABLE"
    assert "hub" in failed.error_message.lower()
    assert services.reconcile()["stopped"] == []
    assert services.cull_sessions() == []
    running.refresh_from_db()
    assert running.status == "ready"  # nothing marked stopped by mistake
    settings.BINDERY_HUB_API_URL = portal.api_url
    services.reconcile()
    running.refresh_from_db()
    assert running.status == "ready"
    services.request_stop(running)
    wait_status(running.pk, "stopped", timeout=60)


class DaphneLikeClient(AsyncClient):
    """Django's async test client, plus the raw (still percent-encoded) path in the scope,
    as daphne sends it: mybinder's git specs need it."""

    def generic(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._raw_path = urlsplit(path).path.encode()
        return super().generic(method, path, *args, **kwargs)

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)  # type: ignore[misc]
        scope["raw_path"] = self._raw_path
        return scope


async def test_build_stream_speaks_mybinder(portal, alice, repo):
    async_client = DaphneLikeClient()
    from apps.accounts.services import create_api_token

    secret = (await sync_to_async(create_api_token)(alice, "sse")).secret
    spec = f"git/{quote(repo.url, safe='')}/main"
    refused = await async_client.get(f"/build/{spec}", headers={"Authorization": f"token {secret}"})
    assert refused.status_code == 400
    response = await async_client.get(
        f"/build/{spec}?urlpath=lab", headers={"Authorization": f"token {secret}",
                                               "Accept": "text/event-stream"},
    )  # fmt: skip
    assert response["Content-Type"].startswith("text/event-stream")
    events = []
    async for chunk in response.streaming_content:
        for block in chunk.decode().split("\n\n"):
            if block.startswith("data: "):
                events.append(json.loads(block[6:]))
    phases = [e["phase"] for e in events]
    allowed = {"waiting", "fetching", "building", "built", "launching", "ready", "failed"}
    assert set(phases) <= allowed, phases
    assert phases[-1] == "ready", events[-3:]
    assert all(isinstance(e["message"], str) for e in events)
    ready = events[-1]
    assert set(ready) >= {
        "url",
        "token",
        "image",
        "repo_url",
        "binder_ref_url",
        "binder_request",
        "binder_persistent_request",
        "binder_launch_host",
    }
    assert ready["binder_request"] == f"v2/{spec}"
    assert ready["binder_persistent_request"].startswith("v2/git/")
    assert ready["url"].endswith("/lab")
    status = requests.get(ready["url"].rsplit("/", 1)[0] + "/api/status",
                          headers={"Authorization": f"token {ready['token']}"})  # fmt: skip
    assert status.status_code == 200
    session = await Session.objects.aget(user=alice, status="ready")
    await sync_to_async(services.request_stop)(session)
    await sync_to_async(wait_status)(session.pk, "stopped", timeout=60)


def test_anonymous_launch_when_allowed(portal, client, repo, settings):
    spec = f"git/{quote(repo.url, safe='')}/main"
    raw = {"REQUEST_URI": f"/v2/{spec}"}  # as a WSGI server passes the undecoded path
    assert client.post(f"/v2/{spec}", **raw).status_code == 302  # sign in first, by default
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    response = client.post(f"/v2/{spec}", **raw)
    assert response.status_code == 200, response.content
    session = wait_status(response.json()["session"], "ready")
    assert session.user is None and session.hub_user.startswith("anon-")
    opened = client.get(f"/sessions/{session.pk}/open/")
    assert opened.status_code == 302 and "token=" in opened["Location"]
    from django.test import Client

    assert Client().get(f"/sessions/{session.pk}/open/").status_code == 404  # another visitor
    client.post(f"/sessions/{session.pk}/stop/")
    wait_status(session.pk, "stopped", timeout=60)


def test_team_launch_mounts_the_team_volume(portal, token_client, alice, repo):
    from apps.teams.models import Membership, Role, Team

    team = Team.objects.create(name="Lab", slug="lab")
    bob = UserFactory(username="bob")
    for person in (alice, bob):
        Membership.objects.create(team=team, user=person, role=Role.MEMBER)
    created = token_client(alice).post(
        "/api/v1/sessions/", {"repo_url": repo.url, "team": "lab"}, format="json"
    )
    session = wait_status(created.json()["id"], "ready")
    base, token = open_base(session)
    state, out = run_code(base, token, "with open('persistent/teams/lab/shared.txt', 'w') as f:"
                          " f.write('for the lab')")  # fmt: skip
    assert state == "ok", out
    services.request_stop(session)
    wait_status(session.pk, "stopped", timeout=60)
    # another member launching for the team finds it; an outsider cannot launch for the team
    bobs = wait_status(services.launch(bob, repo_url=repo.url, team=team).pk, "ready")
    base, token = open_base(bobs)
    state, out = run_code(base, token, "print(open('persistent/teams/lab/shared.txt').read())")
    assert (state, out.strip()) == ("ok", "for the lab")
    outsider = token_client(UserFactory(username="eve"))
    refused = outsider.post("/api/v1/sessions/", {"repo_url": repo.url, "team": "lab"},
                            format="json")  # fmt: skip
    assert refused.status_code == 404
    services.request_stop(bobs)
    wait_status(bobs.pk, "stopped", timeout=60)
