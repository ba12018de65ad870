"""The credential list costs the same number of queries for one credential as for twenty
(issue 13): the user's own and their teams', whoever stored them."""

from __future__ import annotations

import itertools

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.repos.models import Credential
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db


def test_credential_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user, colleague = UserFactory(), UserFactory()
    hosts = itertools.count()
    teams = []
    for n, role in enumerate([Role.OWNER, Role.MEMBER]):
        team = Team.objects.create(name=f"Lab {n}", slug=f"lab-{n}")
        Membership.objects.create(team=team, user=user, role=role)
        Membership.objects.create(team=team, user=colleague, role=Role.ADMIN)
        teams.append(team)
    owners = itertools.cycle([{"user": user}, {"team": teams[0]}, {"team": teams[1]}])
    makers = itertools.cycle([user, colleague, None])

    def add(count: int) -> None:
        for _ in range(count):
            Credential.objects.create(host=f"git{next(hosts)}.example.org", encrypted_token="x",
                                      created_by=next(makers), **next(owners))  # fmt: skip

    client = token_client(user)
    add(1)
    client.get("/api/v1/credentials/")  # the first request of a token records its use
    for rows in (1, 20):
        with django_assert_num_queries(4):  # the token, the roles, the count, the page
            response = client.get("/api/v1/credentials/")
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == rows
        add(19)
    assert {row["owner"] for row in results} == {"user", "team"}
    assert {row["can_delete"] for row in results} == {True, False}
