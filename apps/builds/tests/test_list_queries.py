"""The build list costs the same number of queries for one build as for twenty (issue 13):
public builds, private ones through a credential the user may use, the user's and others'."""

from __future__ import annotations

import itertools

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.repos.models import Credential
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db
_keys = itertools.count()


def add_builds(count: int, requested_by, credential=None) -> None:
    for n in range(count):
        key = next(_keys)
        Build.objects.create(
            provider="gh", spec=f"org/repo-{key}/main", repo_url=f"https://x/{key}",
            repo_slug="x", display_name="x", resolved_ref="0" * 40,
            resolved={"persistent_spec": "x", "ref_url": "y"}, build_key=f"queries-{key}",
            status=["ready", "failed", "pending", "running"][n % 4], requested_by=requested_by,
            credential=credential, scope=f"credential-{credential.pk}" if credential else "",
            result={"environment_key": "k", "packages": [["numpy", "2.1.0"]],
                    "durations": {"install": 3.0}} if n % 4 == 0 else None,
        )  # fmt: skip


def test_build_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user, other = UserFactory(), UserFactory()
    team = Team.objects.create(name="Lab", slug="lab")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    shared = Credential.objects.create(team=team, host="git.example.org", encrypted_token="x")
    client = token_client(user)
    people = itertools.cycle([user, other])

    def add(count: int) -> None:
        for n in range(count):
            add_builds(1, next(people), credential=shared if n % 3 == 1 else None)

    add(1)
    client.get("/api/v1/builds/")  # the first request of a token records its use (once a minute)
    for rows in (1, 20):
        with django_assert_num_queries(3):  # the token, the count, the page
            response = client.get("/api/v1/builds/")
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == rows
        add(19)
    assert {row["private"] for row in results} == {True, False}
    assert any(row["receipt"] for row in results)


def test_my_build_list_queries_do_not_grow(token_client, django_assert_num_queries):
    user = UserFactory()
    client = token_client(user)
    add_builds(1, user)
    client.get("/api/v1/builds/?mine=1")
    for rows in (1, 20):
        with django_assert_num_queries(3):
            response = client.get("/api/v1/builds/?mine=1")
        assert len(response.json()["results"]) == rows
        add_builds(19, user)


def test_log_queries_do_not_grow(token_client, django_assert_num_queries):
    from apps.builds.models import BuildLogLine

    user = UserFactory()
    client = token_client(user)
    add_builds(1, user)
    build = Build.objects.get(requested_by=user)
    url = f"/api/v1/builds/{build.pk}/log/"
    client.get(url)
    for lines in (1, 20):
        BuildLogLine.objects.bulk_create(
            BuildLogLine(build=build, n=n, phase="building", text=f"line {n}")
            for n in range(BuildLogLine.objects.filter(build=build).count() + 1, lines + 1)
        )
        with django_assert_num_queries(3):  # the token, the build, the lines
            response = client.get(url)
        assert len(response.json()["lines"]) == lines
