"""The sessions dashboard (page and the JSON its script redraws from) and the "already
running" check behind "Already running: Open / Start another", through the real views."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.urls import reverse

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.models import Session
from apps.teams.models import Team

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:19560/lab/ocean-model.git"
SPEC = f"{quote(URL, safe='')}/main"


def make_session(user, status="ready", spec=SPEC, provider="git", **fields) -> Session:
    build = Build.objects.create(
        provider=provider, spec=spec, repo_url=URL, repo_slug="ocean-model",
        display_name="lab/ocean-model", resolved_ref="a" * 40,
        resolved={"kind": "git", "repo_url": URL, "unresolved_ref": "main",
                  "resolved_ref": "a" * 40},
        build_key="k", status="ready", requested_by=user,
    )  # fmt: skip
    return Session.objects.create(
        user=user, build=build, hub_user=user.hub_name, provider=provider, spec=spec,
        status=status, memory_bytes=2 * 1024**3, **fields,
    )  # fmt: skip


def row_html(page: str, session: Session) -> str:
    match = re.search(rf'<tr data-session="{session.pk}">(.*?)</tr>', page, re.S)
    assert match, f"no row for session {session.pk}"
    return match.group(1)


def test_dashboard_requires_sign_in(client):
    response = client.get(reverse("sessions"))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_actions_match_each_state_and_open_stays_in_the_tab(client):
    user = UserFactory()
    ready = make_session(user, "ready")
    building = make_session(user, "building")
    stopping = make_session(user, "stopping")
    client.force_login(user)
    response = client.get(reverse("sessions"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "data-reload-after" not in page  # no whole-page reload any more
    assert "js/dashboard.js" in page

    ready_row = row_html(page, ready)
    assert f'href="{reverse("session-open", args=[ready.pk])}"' in ready_row
    assert "target=" not in ready_row  # Open in the same tab, as a launch does
    assert reverse("session-stop", args=[ready.pk]) in ready_row
    assert "Watch" not in ready_row

    building_row = row_html(page, building)
    assert f'href="{reverse("session-launch", args=[building.pk])}"' in building_row
    assert ">Watch<" in building_row
    assert reverse("session-open", args=[building.pk]) not in building_row

    stopping_row = row_html(page, stopping)
    assert "Watch" not in stopping_row and "Open" not in stopping_row
    assert reverse("session-stop", args=[stopping.pk]) not in stopping_row
    assert "Stopping…" in stopping_row


def test_rows_name_the_repository_and_tell_sessions_apart(client):
    user = UserFactory()
    first = make_session(user, "ready", urlpath="lab/tree/a.ipynb")
    second = make_session(user, "ready")
    client.force_login(user)
    page = client.get(reverse("sessions")).content.decode()
    for session in (first, second):
        row = row_html(page, session)
        assert "127.0.0.1:19560/lab/ocean-model @ main" in row
        assert "http%3A%2F%2F" not in row  # no encoded spec for people
        assert f'#<span data-slot="id">{session.pk}</span>' in row
    assert "lab/tree/a.ipynb" in row_html(page, first)
    # The limit is called a limit, not passed off as what is used.
    assert "limit 2.0\xa0GB" in row_html(page, first)


def test_json_has_the_same_rows_and_only_the_owners(client):
    user, other = UserFactory(), UserFactory()
    mine = make_session(user, "launching")
    make_session(other, "ready")
    ended = make_session(user, "failed", error_message="The build failed: no such package.")
    client.force_login(user)
    response = client.get(reverse("sessions"), {"format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert [row["id"] for row in body["active"]] == [mine.pk]
    [row] = body["active"]
    assert row["status"] == "launching" and row["status_label"] == "Launching"
    assert [a["kind"] for a in row["actions"]] == ["watch", "stop"]
    assert row["memory_limit_bytes"] == 2 * 1024**3
    assert row["memory_used_bytes"] is None
    assert row["name"] == "127.0.0.1:19560/lab/ocean-model @ main (aaaaaaa)"
    assert [r["id"] for r in body["recent"]] == [ended.pk]
    assert body["recent"][0]["error_message"] == "The build failed: no such package."


def test_an_ended_session_whose_repository_runs_again_offers_the_running_one(client):
    user = UserFactory()
    ended = make_session(user, "stopped")
    running = make_session(user, "ready")
    client.force_login(user)
    page = client.get(reverse("sessions")).content.decode()
    row = row_html(page, ended)
    assert reverse("session-launch", args=[running.pk]) in row
    assert "Open the running one" in row
    assert "Launch again" not in row


def test_an_ended_session_of_a_repository_not_running_links_to_launch_it_again(client):
    user = UserFactory()
    ended = make_session(user, "stopped", urlpath="lab")
    client.force_login(user)
    row = row_html(client.get(reverse("sessions")).content.decode(), ended)
    assert f'href="/v2/git/{SPEC}?urlpath=lab"' in row
    assert "Launch again" in row


def test_stopping_from_the_dashboard_comes_back_to_it_with_the_session_ended(client):
    user = UserFactory()
    building = make_session(user, "building")
    client.force_login(user)
    response = client.post(reverse("session-stop", args=[building.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("sessions")
    building.refresh_from_db()
    assert building.status == Session.Status.STOPPED
    body = client.get(reverse("sessions"), {"format": "json"}).json()
    assert body["active"] == []
    assert body["recent"][0]["id"] == building.pk
    assert body["recent"][0]["relaunch_label"] == "Launch again"


# --- find_running_session ---------------------------------------------------------------------


def test_running_session_of_the_same_repository_and_ref_is_found():
    user = UserFactory()
    session = make_session(user, "ready")
    assert services.find_running_session(user, "git", SPEC) == session
    # Another escaping of the same URL and ref is the same repository.
    lower = SPEC.replace("%3A", "%3a").replace("%2F", "%2f")
    assert services.find_running_session(user, "git", lower) == session


@pytest.mark.parametrize("status", ["stopping", "stopped", "failed"])
def test_a_session_stopping_or_ended_does_not_count_as_running(status):
    user = UserFactory()
    make_session(user, status)
    assert services.find_running_session(user, "git", SPEC) is None


def test_another_ref_another_owner_or_a_team_launch_is_not_the_same():
    user, other = UserFactory(), UserFactory()
    team = Team.objects.create(name="Lab", slug="lab")
    make_session(other, "ready")
    make_session(user, "ready", team=team)
    assert services.find_running_session(user, "git", f"{quote(URL, safe='')}/dev") is None
    assert services.find_running_session(user, "git", SPEC) is None
    assert services.find_running_session(user, "git", SPEC, team=team) is not None
    assert services.find_running_session(None, "git", SPEC) is None
