"""A hot server handed to a visitor, all real: a git server on 127.0.0.1, the local builder
(uv offline, shared cache), a Celery worker (a thread, real Redis broker) and the session-wide
test JupyterHub (sandboxed where bubblewrap is installed)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
import requests
from celery.contrib.testing.worker import start_worker
from django.test import Client

from apps.sessions import hot, services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import hub_user_status, server_processes, wait_for
from portal.celery import app as celery_app

pytestmark = [pytest.mark.hub, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def portal(hub: Any, hub_settings: Any, git_host: Any, settings: Any) -> Any:
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_IDLE_TIMEOUT = 600
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    settings.BINDERY_HOT_SERVERS = 1
    settings.BINDERY_HOT_MIN_LAUNCHES = 2
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield hub


def wait_status(session_id: int, status: str, timeout: float = 240) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status == "failed":
            pytest.fail(
                f"session {session_id} failed: {session.error_code} {session.error_message}"
            )
        return session if session.status == status else None

    found: Session = wait_for(done, timeout, f"session {session_id} to be {status}")
    return found


def test_a_visitor_is_handed_a_running_server(portal, git_host, settings):
    files = {"requirements.txt": "tabulate==0.9.0\n", "index.ipynb": "{}"}
    repo = git_host.create_repo(f"org/hot-{uuid.uuid4().hex[:8]}", files)
    # two visitors launch it (the first builds): it is now among the most launched
    for _ in range(2):
        session = services.launch(None, repo_url=repo.url, anonymous_owner=uuid.uuid4().hex)
        wait_status(session.pk, "ready")
        services.request_stop(session)
        wait_status(session.pk, "stopped", timeout=60)
    build_id = session.build_id
    assert hot.fill()["started"] == [build_id]
    spare = wait_status(hot.spares().get().pk, "ready")
    assert spare.spare and spare.user is None and spare.anonymous_owner.startswith("hot-")

    # a third visitor, through mybinder's /v2/ route, is handed that server: ready at once
    visitor = Client()
    spec = f"git/{quote(repo.url, safe='')}/HEAD"
    response = visitor.post(f"/v2/{spec}?urlpath=lab/tree/index.ipynb",
                            REQUEST_URI=f"/v2/{spec}")  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json()["session"] == spare.pk
    mine = Session.objects.get(pk=spare.pk)
    assert mine.status == "ready" and not mine.spare and mine.handed_over_at is not None
    assert mine.url.endswith(f"/{mine.server_name}/lab/tree/index.ipynb")
    assert server_processes(mine.hub_user, mine.server_name), "the same server, not a new one"
    # the visitor opens it with its token; another visitor cannot
    opened = visitor.get(f"/sessions/{mine.pk}/open/")
    assert opened.status_code == 302 and "token=" in opened["Location"]
    base = mine.url.split(f"/{mine.server_name}/", 1)[0] + f"/{mine.server_name}"
    token = services.session_token(mine)
    status = requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"},
                          timeout=10)  # fmt: skip
    assert status.status_code == 200
    assert Client().get(f"/sessions/{mine.pk}/open/").status_code == 404

    # the handover asked for a replacement (the worker's fill): another spare comes up
    replacement = wait_for(lambda: hot.spares().exclude(pk=mine.pk).first(), 60, "a new spare")
    replacement = wait_status(replacement.pk, "ready")
    assert replacement.hub_user != mine.hub_user

    # the visitor stops theirs: the server and its own hub user go
    visitor.post(f"/sessions/{mine.pk}/stop/")
    wait_status(mine.pk, "stopped", timeout=60)
    assert hub_user_status(portal, mine.hub_user) == 404
    settings.BINDERY_HOT_SERVERS = 0  # turned off: the spare goes too
    assert hot.fill()["stopped"] == [replacement.pk]
    wait_status(replacement.pk, "stopped", timeout=60)
    assert hub_user_status(portal, replacement.hub_user) == 404
