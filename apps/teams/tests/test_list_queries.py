"""The team, member and invitation lists cost the same number of queries for one row as for
twenty (issue 13). (A team's sessions: apps/sessions/tests/test_list_queries.py.)"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

import pytest

from apps.accounts.models import User
from apps.accounts.tests.factories import UserFactory
from apps.teams import services
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db
_n = itertools.count()


def assert_constant(client: Any, url: str, add: Callable[[int], None], queries: int,
                    assert_num: Any, extra: int = 0) -> list[Any]:  # fmt: skip
    """``queries`` for one row added and for twenty (``extra``: rows listed anyway)."""
    add(1)
    client.get(url)  # the first request of a token records its use (once a minute)
    for rows in (1, 20):
        with assert_num(queries):
            response = client.get(url)
        assert response.status_code == 200, response.content
        results = response.json()["results"]
        assert len(results) == rows + extra
        add(19)
    return results


def test_team_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user = UserFactory()
    roles = itertools.cycle([Role.OWNER, Role.ADMIN, Role.MEMBER])

    def add(count: int) -> None:
        for _ in range(count):
            n = next(_n)
            team = Team.objects.create(name=f"Lab {n}", slug=f"lab-{n}")
            Membership.objects.create(team=team, user=user, role=next(roles))

    rows = assert_constant(token_client(user), "/api/v1/teams/", add, 3,
                           django_assert_num_queries)  # the token, the count, the page  # fmt: skip
    assert {row["role"] for row in rows} == {"owner", "admin", "member"}


def test_member_list_queries_do_not_grow(crew, token_client, django_assert_num_queries):
    roles = itertools.cycle([Role.ADMIN, Role.MEMBER])

    def add(count: int) -> None:
        for _ in range(count):
            user = cast(User, UserFactory())
            Membership.objects.create(team=crew.team, user=user, role=next(roles))

    # the token, the caller's membership, the count, the page; the crew's three listed too
    rows = assert_constant(token_client(crew.member), "/api/v1/teams/ocean-lab/memberships/",
                           add, 4, django_assert_num_queries, extra=3)  # fmt: skip
    assert all(row["user"]["username"] for row in rows)


def test_invitation_list_queries_do_not_grow(crew, token_client, django_assert_num_queries):
    actors = itertools.cycle([crew.owner_m, crew.admin_m])

    def add(count: int) -> None:
        for n in range(count):
            actor = next(actors)
            if n % 2:
                services.create_invite_link(actor, Role.MEMBER, 7, None)
            else:
                services.invite_by_email(actor, f"guest{next(_n)}@example.org")

    rows = assert_constant(token_client(crew.admin), "/api/v1/teams/ocean-lab/invitations/",
                           add, 4, django_assert_num_queries)  # fmt: skip
    assert {row["created_by"] for row in rows} == {"owner", "admin"}
