"""The share link and team environment lists cost the same number of queries for one row
as for twenty (issue 13)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.sharing.models import ShareLink, TeamEnvironment

pytestmark = pytest.mark.django_db
_n = itertools.count()


def test_share_link_list_queries_do_not_grow(crew, token_client, django_assert_num_queries):
    def add(count: int) -> None:
        for _ in range(count):
            n = next(_n)
            team = crew.team if n % 2 else None
            ShareLink.objects.create(
                created_by=crew.member, provider="gh", spec=f"org/repo-{n}/main",
                audience="team" if team else "signed_in", team=team, digest=f"{n:064x}",
                revoked_at=timezone.now() if n % 3 == 0 else None,
                expires_at=timezone.now() - timedelta(days=1) if n % 5 == 0 else None,
            )  # fmt: skip

    client = token_client(crew.member)
    add(1)
    client.get("/api/v1/shares/")  # the first request of a token records its use
    for rows in (1, 20):
        with django_assert_num_queries(3):  # the token, the count, the page
            response = client.get("/api/v1/shares/")
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == rows
        add(19)
    assert {row["team"] for row in results} == {None, "ocean-lab"}


def test_team_environment_list_queries_do_not_grow(crew, token_client,
                                                   django_assert_num_queries):  # fmt: skip
    makers = itertools.cycle([crew.owner, crew.admin, None])

    def add(count: int) -> None:
        for _ in range(count):
            n = next(_n)
            TeamEnvironment.objects.create(
                team=crew.team, name=f"Env {n}", provider="gh", spec=f"org/repo-{n}/main",
                follow_branch=bool(n % 2), resolved_ref="0" * 40,
                pinned_spec=f"gh/org/repo-{n}/{'0' * 40}", created_by=next(makers),
            )  # fmt: skip

    client = token_client(crew.member)
    url = "/api/v1/teams/ocean-lab/environments/"
    add(1)
    client.get(url)
    for rows in (1, 20):
        with django_assert_num_queries(4):  # the token, the membership, the count, the page
            response = client.get(url)
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == rows
        add(19)
    assert {row["created_by"] for row in results} == {"owner", "admin", None}
