"""The bounds nobody can talk their way past: a team made by a user grants no more than a
user has; one person's sessions across all their teams; a session's size without a limit;
visitors without an account; team environments; the ledger when a team is deleted; who may
cap whom; a member leaving a team. Real database, real git repositories over HTTP."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import ledger, services
from apps.quotas.models import UsageRecord
from apps.sessions.models import Session
from apps.teams.models import Membership, Role, Team
from apps.testing import requires

pytestmark = pytest.mark.django_db
GIB = 1024**3


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/bounds-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def launch(client, repo, **body):
    return client.post("/api/v1/sessions/", {"repo_url": repo.url, **body}, format="json")


def a_session(user, team=None, status="ready") -> Session:
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key=uuid.uuid4().hex, status="ready",
    )  # fmt: skip
    return Session.objects.create(user=user, team=team, build=build, hub_user=user.hub_name,
                                  provider="git", spec="x", status=status)  # fmt: skip


def test_a_team_a_user_made_grants_no_more_than_a_user_has(
    token_client, repo, settings, default_team_ceiling
):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1
    user = UserFactory()
    client = token_client(user)
    assert client.post("/api/v1/teams/", {"name": "My Own"}, format="json").status_code == 201
    slug = Team.objects.get(name="My Own").slug
    for body in ({"memory": 2**40}, {"sessions": None}, {"sessions": 50}, {"cpu": 512}):
        response = client.put(f"/api/v1/teams/{slug}/quota/", body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert response.json()["error"] == "QUOTA_ABOVE_CEILING"
    assert not Team.objects.get(slug=slug).quotas.exists()
    # the team's pool is what one person has: one session at once, 2 GiB each
    assert launch(client, repo, team=slug).status_code == 201
    second = launch(client, repo, team=slug)
    assert (second.status_code, second.json()["limit"]) == (429, "sessions")
    big = launch(client, repo, memory=4 * GIB)
    assert (big.status_code, big.json()["limit"], big.json()["allowed"]) == (429, "memory", 2 * GIB)
    assert Session.objects.filter(user=user).count() == 1


def test_one_person_cannot_multiply_sessions_by_joining_teams(token_client, repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_PERSON = 2
    user = UserFactory()
    teams = [Team.objects.create(name=f"T{i}", slug=f"t{i}-{uuid.uuid4().hex[:6]}")
             for i in range(3)]  # fmt: skip
    for team in teams:
        Membership.objects.create(team=team, user=user, role=Role.OWNER)
    a_session(user)  # personal
    a_session(user, teams[0])  # and one for a team
    refused = launch(token_client(user), repo, team=teams[1].slug)
    body = refused.json()
    assert (refused.status_code, body["limit"], body["used"], body["allowed"]) == (
        429, "sessions", 2, 2)  # fmt: skip
    assert "one person" in body["detail"]
    assert Session.objects.filter(user=user).count() == 2


def test_a_session_cannot_ask_for_more_cpu_than_the_machine_has(token_client, repo, settings):
    settings.BINDERY_SESSION_CPU = ""  # no CPU limit by default
    cores = float(os.cpu_count() or 1)
    response = launch(token_client(UserFactory()), repo, cpu=cores + 1)
    body = response.json()
    assert (response.status_code, body["limit"], body["allowed"]) == (429, "cpu", cores)
    assert not Session.objects.exists()
    ok = launch(token_client(UserFactory()), repo, cpu=0.5)
    assert ok.status_code == 201 and ok.json()["cpu"] == 0.5


@requires(connection.vendor == "postgresql", reason="concurrent admission needs PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_visitor_without_an_account_is_admitted_once_however_many_at_once(git_host, settings):
    from apps.sessions.services import launch as launch_session

    settings.BINDERY_MAX_SESSIONS_ANONYMOUS = 1
    repo = git_host.create_repo(f"org/anon-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})
    barrier = threading.Barrier(12)
    outcomes: list[str] = []

    def one() -> None:
        try:
            barrier.wait()
            launch_session(None, repo_url=repo.url, anonymous_owner="visitor-1")
            outcomes.append("admitted")
        except services.QuotaExceeded:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["admitted"] + ["refused"] * 11
    assert Session.objects.filter(anonymous_owner="visitor-1").count() == 1


def test_a_team_environment_stays_within_the_teams_limits(crew, token_client, git_host):
    repo = git_host.create_repo(f"org/env-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})
    admin = token_client(crew.admin)
    admin.put("/api/v1/teams/ocean-lab/quota/", {"memory": 2 * GIB, "cpu": 2}, format="json")
    url = "/api/v1/teams/ocean-lab/environments/"
    for extra, field in (({"memory_bytes": 4 * GIB}, "memory_bytes"), ({"cpu": 3}, "cpu"),
                         ({"memory_bytes": 10**30}, "memory_bytes"),
                         ({"cpu": 1e308}, "cpu")):  # fmt: skip
        body = {"name": "big", "repo_url": repo.url, "ref": "HEAD", **extra}
        response = admin.post(url, body, format="json")
        assert response.status_code == 400, (extra, response.content)
        assert field in response.json().get("fields", {field: 1})
    assert not crew.team.environments.exists()
    ok = admin.post(url, {"name": "fits", "repo_url": repo.url, "ref": "HEAD",
                          "memory_bytes": GIB, "cpu": 1}, format="json")  # fmt: skip
    assert ok.status_code == 201, ok.json()


def test_deleting_a_team_does_not_turn_its_use_into_its_members_personal_use(crew):
    period = ledger.period_of(timezone.now())
    UsageRecord.objects.create(key="team-time", kind="session", period=period.first,
                               start=period.start, end=period.start, quantity=20 * 3600,
                               user=crew.member, team=crew.team, scope="team")  # fmt: skip
    assert services.usage_for(crew.member).get("session_hours").used == 0
    crew.team.delete()
    row = UsageRecord.objects.get(key="team-time")
    assert row.team_id is None and row.scope == "team"  # kept, still the team's
    assert services.usage_for(crew.member).get("session_hours").used == 0


def test_an_admin_cannot_cap_an_owner(crew, token_client):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.owner_m.pk}/quota/"
    response = token_client(crew.admin).put(url, {"sessions": 0}, format="json")
    assert (response.status_code, response.json()["error"]) == (403, "PERMISSION_DENIED")
    assert not crew.owner_m.quotas.exists()
    assert token_client(crew.owner).put(url, {"sessions": 1}, format="json").status_code == 200


def test_leaving_or_being_removed_stops_ones_team_sessions_only(crew, token_client):
    team_session = a_session(crew.member, crew.team)
    personal = a_session(crew.member)
    response = token_client(crew.admin).delete(
        f"/api/v1/teams/ocean-lab/memberships/{crew.member_m.pk}/"
    )
    assert response.status_code == 204
    team_session.refresh_from_db()
    personal.refresh_from_db()
    assert (team_session.status, personal.status) == ("stopping", "ready")
    assert "removed from the team" in team_session.events.last().message
    mine = a_session(crew.admin, crew.team)
    assert token_client(crew.admin).post("/api/v1/teams/ocean-lab/leave/").status_code in (200, 204)
    mine.refresh_from_db()
    assert mine.status == "stopping"
