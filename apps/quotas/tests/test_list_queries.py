"""The team's usage per member (JSON and CSV) costs the same number of queries for one
member as for twenty (issue 13), whatever each runs and whatever their caps."""

from __future__ import annotations

import itertools
from typing import cast

import pytest

from apps.accounts.models import User
from apps.accounts.tests.factories import UserFactory
from apps.quotas.models import Quota
from apps.quotas.tests.api_support import TEAM_CSV, TEAM_USAGE, running_build, running_session
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db
_n = itertools.count()


def add_members(team: Team, count: int) -> None:
    for _ in range(count):
        n = next(_n)
        user = cast(User, UserFactory())
        membership = Membership.objects.create(team=team, user=user, role=Role.MEMBER)
        running_session(membership.user, team, cpu=1.0, memory_bytes=2**30)
        running_build(membership.user, team)
        if n % 2:
            Quota.objects.create(scope="member", membership=membership, values={"sessions": 2})


# The token, the membership, the team's pool (limits and grouped counts), the members' caps
# and grouped counts: fixed numbers of queries, counted here once.
@pytest.mark.parametrize(
    "url,queries", [(f"{TEAM_USAGE}?by=member", 23), (TEAM_CSV, 11), (TEAM_USAGE, 13)]
)
def test_team_usage_queries_do_not_grow(crew, token_client, django_assert_num_queries, url,
                                        queries):  # fmt: skip
    client = token_client(crew.admin)
    add_members(crew.team, 1)
    client.get(url)  # the first request of a token records its use (once a minute)
    for members in (1, 20):
        with django_assert_num_queries(queries):
            response = client.get(url)
        assert response.status_code == 200, response.content
        if url.endswith("?by=member"):
            assert len(response.json()["members"]) == members + 3  # and the crew
        elif url == TEAM_CSV:
            assert response.content.decode().count("\n") == members + 3 + 1  # and a header
        add_members(crew.team, 19)
