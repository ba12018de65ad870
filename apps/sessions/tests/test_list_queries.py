"""The session and volume lists cost the same number of queries for one row as for twenty
(issue 13): whatever the rows' statuses, builds and teams."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions.models import Session, SessionEvent
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db
_keys = itertools.count()
# A building session reads its build's phase, a ready one its memory: every kind of row.
STATUSES = ["ready", "building", "stopped", "failed", "launching", "pending", "stopping"]


def add_sessions(user: Any, count: int, team: Team | None = None) -> None:
    for _ in range(count):
        key = next(_keys)
        status = STATUSES[key % len(STATUSES)]
        build = Build.objects.create(
            provider="gh", spec=f"org/repo-{key}/main", repo_url="x", repo_slug="x",
            display_name="x", resolved_ref="0" * 40, resolved={}, build_key=f"queries-{key}",
            status="running" if status == "building" else "ready", phase="building",
            result={"environment_key": "k", "packages": [["numpy", "2.1.0"]]},
        )  # fmt: skip
        session = Session.objects.create(
            user=user, team=team, build=build, hub_user=user.hub_name, provider="gh",
            spec=f"org/repo-{key}/main", status=status,
        )  # fmt: skip
        SessionEvent.objects.create(session=session, n=1, phase="waiting", message="queued")


def assert_constant(
    client: Any,
    url: str,
    add: Callable[[int], None],
    queries: int,
    assert_num: Any,
    extra: int = 0,
) -> list[Any]:
    """``queries`` for one row added and for twenty (``extra``: rows listed anyway);
    returns the last rows."""
    add(1)
    client.get(url)  # the first request of a token records its use (once a minute)
    for rows in (1, 20):
        with assert_num(queries):
            response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        results = body["results"] if isinstance(body, dict) else body
        assert len(results) == rows + extra
        add(19)
    return results


def test_session_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user = UserFactory()
    team = Team.objects.create(name="Lab", slug="lab")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    client = token_client(user)

    def add(count: int) -> None:
        add_sessions(user, count - count // 2)
        add_sessions(user, count // 2, team)

    rows = assert_constant(client, "/api/v1/sessions/", add, 3, django_assert_num_queries)
    assert {row["team"] for row in rows} == {None, "lab"}
    assert {row["status"] for row in rows} == set(STATUSES)
    assert "building" in {row["phase"] for row in rows}


def test_active_session_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user = UserFactory()
    client = token_client(user)
    url = "/api/v1/sessions/?active=1"

    def add(count: int) -> None:
        for _ in range(count):
            add_sessions(user, 1)
            Session.objects.filter(user=user, status__in=Session.TERMINAL).update(status="ready")

    assert_constant(client, url, add, 3, django_assert_num_queries)


def test_team_session_list_queries_do_not_grow(crew, token_client, django_assert_num_queries):
    client = token_client(crew.admin)
    people = itertools.cycle([crew.owner, crew.admin, crew.member])

    def add(count: int) -> None:
        for _ in range(count):
            add_sessions(next(people), 1, crew.team)

    rows = assert_constant(client, "/api/v1/teams/ocean-lab/sessions/", add, 4,
                           django_assert_num_queries)  # fmt: skip
    assert {row["user"]["username"] for row in rows} == {"owner", "admin", "member"}
    assert {row["status"] for row in rows} == set(STATUSES)


def test_volume_list_queries_do_not_grow(token_client, django_assert_num_queries):
    """The home volume and one per team, each with a session (in use) or not."""
    user = UserFactory()
    client = token_client(user)
    teams = itertools.count()

    def add(count: int) -> None:
        for _ in range(count):
            n = next(teams)
            team = Team.objects.create(name=f"Lab {n}", slug=f"lab-{n}")
            Membership.objects.create(team=team, user=user, role=Role.MEMBER)
            if n % 2:
                add_sessions(user, 1, team)
        client.get("/api/v1/volumes/")  # makes the new teams' volume rows (a write, once)

    add_sessions(user, 1)
    rows = assert_constant(client, "/api/v1/volumes/", add, 4, django_assert_num_queries,
                           extra=1)  # fmt: skip
    assert [row["kind"] for row in rows].count("home") == 1
    assert {row["in_use"] for row in rows} == {True, False}
