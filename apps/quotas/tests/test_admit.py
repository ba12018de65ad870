"""Admission refuses a launch before any work starts, with which limit, used and allowed."""

from __future__ import annotations

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas.models import Quota
from apps.sessions.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(git_host):
    import uuid

    return git_host.create_repo(f"org/quota-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def running_session(user):
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key=f"k{user.pk}", status="ready",
    )  # fmt: skip
    return Session.objects.create(user=user, build=build, hub_user=user.hub_name,
                                  provider="git", spec="x", status="ready")  # fmt: skip


def test_over_the_default_limit_is_429(token_client, repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1
    user = UserFactory()
    running_session(user)
    response = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert response.status_code == 429
    body = response.json()
    assert (body["error"], body["limit"], body["used"], body["allowed"]) == (
        "QUOTA_EXCEEDED", "sessions", 1, 1)  # fmt: skip
    assert Session.objects.filter(user=user).count() == 1
    assert Build.objects.filter(repo_url=repo.url).count() == 0  # nothing started


def test_a_user_policy_overrides_the_default(token_client, repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1
    user = UserFactory()
    Quota.objects.create(scope="user", user=user, values={"sessions": 2, "memory": 512 * 1024**2})
    running_session(user)
    response = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["memory_bytes"] == 512 * 1024**2


def test_ended_sessions_do_not_count(token_client, repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1
    user = UserFactory()
    ended = running_session(user)
    Session.objects.filter(pk=ended.pk).update(status="stopped")
    response = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert response.status_code == 201


def running_build(user, n: int) -> Build:
    return Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref=f"{n:040d}", resolved={}, build_key=f"running-{user.pk}-{n}",
        status="running", requested_by=user,
    )  # fmt: skip


def test_builds_at_once_are_capped_per_user(token_client, repo, git_host, settings):
    settings.BINDERY_MAX_BUILDS_PER_USER = 2
    settings.BINDERY_MAX_SESSIONS_PER_USER = 10
    user, other = UserFactory(), UserFactory()
    running_build(user, 1)
    running_build(user, 2)
    before = Build.objects.count()
    response = token_client(user).post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert response.status_code == 429
    body = response.json()
    assert (body["error"], body["limit"], body["used"], body["allowed"], body["left"]) == (
        "BUILD_QUOTA_EXCEEDED", "builds", 2, 2, 0)  # fmt: skip
    assert Build.objects.count() == before and not Session.objects.filter(user=user).exists()
    # another user's builds do not count; a finished build frees a place
    assert token_client(other).post(
        "/api/v1/sessions/", {"repo_url": repo.url}, format="json").status_code == 201  # fmt: skip
    Build.objects.filter(requested_by=user, build_key__startswith="running-").update(status="ready")
    fresh = git_host.create_repo(f"org/quota-{user.pk}-again", {"requirements.txt": ""})
    again = token_client(user).post("/api/v1/sessions/", {"repo_url": fresh.url}, format="json")
    assert again.status_code == 201, again.json()
    assert Build.objects.filter(requested_by=user, repo_url=fresh.url).count() == 1
