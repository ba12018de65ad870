"""Team owners and admins see and stop their team's sessions, never members' personal ones:
the API and the team page, for owner, admin, member, outsider and anonymous."""

from __future__ import annotations

import itertools

import pytest

from apps.builds.models import Build
from apps.sessions.models import Session, SessionEvent

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "outsider", "anonymous"]
_keys = itertools.count()


def running_session(user, team=None, spec="org/repo/main"):
    build = Build.objects.create(
        provider="gh", spec=spec, repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key=f"team-sessions-{next(_keys)}",
        status="ready",
    )  # fmt: skip
    return Session.objects.create(user=user, team=team, build=build, hub_user=user.hub_name,
                                  provider="gh", spec=spec, status="ready")  # fmt: skip


@pytest.fixture
def sessions(crew):
    """The member's team session and their personal one."""
    team = running_session(crew.member, crew.team, spec="org/team-repo/main")
    personal = running_session(crew.member, spec="org/private-notes/main")
    return team, personal


def expect(response, status, code=None):
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"] == code


def status_of(session):
    session.refresh_from_db()
    return session.status


# --- GET /api/v1/teams/{slug}/sessions/ ---


@pytest.mark.parametrize(
    "role,status,code",
    [("owner", 200, None), ("admin", 200, None), ("member", 403, "PERMISSION_DENIED"),
     ("outsider", 404, "NOT_FOUND"), ("anonymous", 401, None)],
)  # fmt: skip
def test_list_team_sessions_by_role(crew, sessions, token_client, role, status, code):
    response = token_client(getattr(crew, role)).get("/api/v1/teams/ocean-lab/sessions/")
    expect(response, status, code)
    if status == 200:
        results = response.json()["results"]
        assert [s["id"] for s in results] == [sessions[0].pk]  # never the personal one
        assert results[0]["team"] == "ocean-lab"
        assert results[0]["user"]["id"] == crew.member.pk
        assert results[0]["user"]["username"] == "member"
        assert results[0]["user"]["email"] == "member@example.org"
        assert results[0]["status"] == "ready"


def test_active_filter_leaves_out_ended_sessions(crew, sessions, token_client):
    ended = running_session(crew.admin, crew.team)
    Session.objects.filter(pk=ended.pk).update(status="stopped")
    client = token_client(crew.admin)
    every = [s["id"] for s in client.get("/api/v1/teams/ocean-lab/sessions/").json()["results"]]
    assert set(every) == {sessions[0].pk, ended.pk}
    active = client.get("/api/v1/teams/ocean-lab/sessions/?active=1").json()["results"]
    assert [s["id"] for s in active] == [sessions[0].pk]


def test_another_teams_sessions_are_not_listed(crew, sessions, token_client):
    from apps.teams.services import create_team

    other = create_team(crew.outsider, "Other Lab")
    running_session(crew.outsider, other)
    results = token_client(crew.admin).get("/api/v1/teams/ocean-lab/sessions/").json()["results"]
    assert [s["id"] for s in results] == [sessions[0].pk]


def test_list_query_count_does_not_grow(crew, token_client, django_assert_max_num_queries):
    for _ in range(6):
        running_session(crew.member, crew.team)
    client = token_client(crew.admin)
    with django_assert_max_num_queries(8):
        assert len(client.get("/api/v1/teams/ocean-lab/sessions/").json()["results"]) == 6


# --- DELETE /api/v1/sessions/{id}/ ---


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_admin_stops_a_members_team_session(crew, sessions, token_client, role):
    team_session, personal = sessions
    response = token_client(getattr(crew, role)).delete(f"/api/v1/sessions/{team_session.pk}/")
    expect(response, 202)
    assert response.json()["status"] == "stopping"
    assert status_of(team_session) == "stopping"
    event = SessionEvent.objects.filter(session=team_session).last()
    assert event is not None
    assert event.message == f"Stopped by a team admin ({getattr(crew, role).label})."
    assert status_of(personal) == "ready"


@pytest.mark.parametrize("role,status", [("owner", 404), ("admin", 404), ("outsider", 404),
                                         ("anonymous", 401)])  # fmt: skip
def test_nobody_else_stops_a_members_personal_session(crew, sessions, token_client, role, status):
    personal = sessions[1]
    response = token_client(getattr(crew, role)).delete(f"/api/v1/sessions/{personal.pk}/")
    expect(response, status)
    assert status_of(personal) == "ready"
    assert not SessionEvent.objects.filter(session=personal).exists()


def test_member_cannot_stop_another_members_team_session(crew, token_client):
    admins = running_session(crew.admin, crew.team)
    response = token_client(crew.member).delete(f"/api/v1/sessions/{admins.pk}/")
    expect(response, 404, "NOT_FOUND")
    assert status_of(admins) == "ready"


def test_outsider_cannot_stop_a_team_session(crew, sessions, token_client):
    response = token_client(crew.outsider).delete(f"/api/v1/sessions/{sessions[0].pk}/")
    expect(response, 404, "NOT_FOUND")
    assert status_of(sessions[0]) == "ready"


def test_owner_stopping_their_own_session_is_recorded_as_the_owner(crew, sessions, token_client):
    response = token_client(crew.member).delete(f"/api/v1/sessions/{sessions[0].pk}/")
    expect(response, 202)
    assert SessionEvent.objects.filter(session=sessions[0]).last().message == (
        "Stopped by its owner."
    )


def test_an_admin_demoted_to_member_can_no_longer_stop(crew, sessions, token_client):
    crew.admin_m.role = "member"
    crew.admin_m.save(update_fields=["role"])
    response = token_client(crew.admin).delete(f"/api/v1/sessions/{sessions[0].pk}/")
    expect(response, 404, "NOT_FOUND")
    assert status_of(sessions[0]) == "ready"


def test_admin_get_of_a_members_session_stays_404(crew, sessions, token_client):
    response = token_client(crew.admin).get(f"/api/v1/sessions/{sessions[0].pk}/")
    expect(response, 404, "NOT_FOUND")


def test_stopping_an_ended_team_session_is_409(crew, sessions, token_client):
    Session.objects.filter(pk=sessions[0].pk).update(status="stopped")
    response = token_client(crew.admin).delete(f"/api/v1/sessions/{sessions[0].pk}/")
    expect(response, 409, "SESSION_NOT_STOPPABLE")


# --- the team page ---


@pytest.mark.parametrize("role,shown", [("owner", True), ("admin", True), ("member", False)])
def test_running_sessions_section_only_for_admins(client, crew, sessions, role, shown):
    client.force_login(getattr(crew, role))
    html = client.get("/teams/ocean-lab/").content.decode()
    assert ("Running sessions" in html) is shown
    stop_url = f"/teams/ocean-lab/sessions/{sessions[0].pk}/stop/"
    assert (stop_url in html) is shown
    assert f"/sessions/{sessions[1].pk}/stop/" not in html  # never the personal session
    assert "private-notes" not in html
    if shown:
        assert crew.member.label in html
        assert "team-repo" in html
        assert 'name="csrfmiddlewaretoken"' in html


def test_stop_button_stops_the_team_session(client, crew, sessions):
    client.force_login(crew.admin)
    response = client.post(f"/teams/ocean-lab/sessions/{sessions[0].pk}/stop/")
    assert response.status_code == 302
    assert response["Location"] == "/teams/ocean-lab/"
    assert status_of(sessions[0]) == "stopping"
    assert SessionEvent.objects.filter(session=sessions[0]).last().message == (
        f"Stopped by a team admin ({crew.admin.label})."
    )
    html = client.get("/teams/ocean-lab/").content.decode()
    assert "Stopping the session of" in html
    assert "Stopping…" in html  # the row no longer offers Stop


def test_stop_page_refuses_a_personal_session(client, crew, sessions):
    client.force_login(crew.admin)
    response = client.post(f"/teams/ocean-lab/sessions/{sessions[1].pk}/stop/")
    assert response.status_code == 404
    assert status_of(sessions[1]) == "ready"


@pytest.mark.parametrize("role,status", [("member", 403), ("outsider", 404)])
def test_stop_page_refuses_members_and_outsiders(client, crew, sessions, role, status):
    client.force_login(getattr(crew, role))
    response = client.post(f"/teams/ocean-lab/sessions/{sessions[0].pk}/stop/")
    assert response.status_code == status
    assert status_of(sessions[0]) == "ready"
    response = client.post("/teams/ocean-lab/sessions/stop-all/")
    assert response.status_code == status
    assert status_of(sessions[0]) == "ready"


def test_stop_page_anonymous_is_sent_to_sign_in(client, crew, sessions):
    response = client.post(f"/teams/ocean-lab/sessions/{sessions[0].pk}/stop/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert status_of(sessions[0]) == "ready"


def test_stop_page_needs_post(client, crew, sessions):
    client.force_login(crew.admin)
    response = client.get(f"/teams/ocean-lab/sessions/{sessions[0].pk}/stop/")
    assert response.status_code == 405
    assert status_of(sessions[0]) == "ready"


def test_stop_all_stops_every_team_session_and_no_personal_one(client, crew, sessions):
    admins_own = running_session(crew.admin, crew.team)
    client.force_login(crew.owner)
    response = client.post("/teams/ocean-lab/sessions/stop-all/", follow=True)
    assert "Stopping 2 sessions." in response.content.decode()
    assert status_of(sessions[0]) == "stopping"
    assert status_of(admins_own) == "stopping"
    assert status_of(sessions[1]) == "ready"
