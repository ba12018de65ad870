"""On PostgreSQL, 200 launch requests at once against a limit of N admit exactly N.

Real requests: ``POST /api/v1/sessions/`` through DRF with real personal tokens, from a pool
of worker threads (as many as the server's connections allow, at most 60) that start
together behind a barrier and keep every one of them busy until the 200 are sent; the same
repository each time, served by a real git server on 127.0.0.1. Rows are committed
(``transaction=True``) so each thread sees the others'. No Celery worker runs: the launches
stay queued, which is what is counted. SQLite serialises every writer, so the race cannot
happen there: these tests skip on it (and fail in CI, which runs PostgreSQL).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from apps.accounts.services import create_api_token
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import services as quotas
from apps.quotas.models import Quota
from apps.sessions.models import Session
from apps.teams.models import Membership, Role
from apps.testing import requires

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires(connection.vendor == "postgresql",
             reason="concurrent admission needs PostgreSQL (SQLite serialises all writers)"),
]  # fmt: skip

REQUESTS = 200
MAX_WORKERS = 60


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    started: float
    ended: float


def worker_count() -> int:
    """Threads that may hold a connection each: at most 60, leaving room for everyone else
    using this server (other test runs) and for this test's own connection."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        allowed = int(cursor.fetchone()[0])
        cursor.execute("SELECT count(*) FROM pg_stat_activity")
        in_use = int(cursor.fetchone()[0])
    workers = min(MAX_WORKERS, allowed - in_use - 25)
    assert workers >= 20, f"only {workers} PostgreSQL connections free: not a fair race"
    return workers


def post(client: APIClient, body: dict[str, Any]) -> Any:
    """The request, sent again if PostgreSQL refused its connection (other test runs share
    the server). Safe: a request opens its connection at its first query, so a refused one
    did nothing."""
    for attempt in range(100):
        try:
            return client.post("/api/v1/sessions/", body, format="json")
        except OperationalError as exc:
            if "too many clients" not in str(exc):
                raise
            time.sleep(0.05 * (1 + attempt % 5))
    raise AssertionError("PostgreSQL refused connections for too long")


def storm(requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[Reply], int]:
    """Send every (token secret, body) request from a pool of threads that start at once;
    return the replies in request order and the most requests that were in flight at once."""
    replies: list[Reply | None] = [None] * len(requests)
    errors: list[BaseException] = []
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(requests)):
        todo.put(index)
    workers = worker_count()
    barrier = threading.Barrier(workers)

    def work() -> None:
        clients: dict[str, APIClient] = {}
        try:
            barrier.wait(timeout=60)
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                secret, body = requests[index]
                if secret not in clients:
                    clients[secret] = APIClient()
                    clients[secret].credentials(HTTP_AUTHORIZATION=f"token {secret}")
                started = time.monotonic()
                response = post(clients[secret], body)
                replies[index] = Reply(response.status_code, response.json(), started,
                                       time.monotonic())  # fmt: skip
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=work, name=f"launch-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:3]
    done = [r for r in replies if r is not None]
    assert len(done) == len(requests)
    events = sorted([(r.started, 1) for r in done] + [(r.ended, -1) for r in done])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return done, peak


def assert_exactly(replies: list[Reply], peak: int, allowed: int) -> None:
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: allowed, 429: REQUESTS - allowed}, (
        statuses, [r.body for r in replies if r.status not in (201, 429)][:3])  # fmt: skip
    expected = {"error": "QUOTA_EXCEEDED", "limit": "sessions", "used": allowed,
                "allowed": allowed, "left": 0, "resets_at": None}  # fmt: skip
    refused = [{k: r.body.get(k) for k in expected} for r in replies if r.status == 429]
    assert all(body == expected for body in refused), Counter(map(str, refused)).most_common(3)
    # the requests did race: many were in flight at once, not one after the other
    assert peak >= 20, peak
    print(f"\n{REQUESTS} requests, up to {peak} in flight at once: "
          f"{statuses[201]} admitted, {statuses[429]} refused")  # fmt: skip


def assert_one_shared_build(repo_url: str, replies: list[Reply]) -> None:
    builds = Build.objects.filter(repo_url=repo_url)
    assert builds.count() == 1  # the refused requests started nothing
    build = builds.get()
    assert {r.body["build"] for r in replies if r.status == 201} == {build.pk}
    assert set(Session.objects.values_list("build_id", flat=True)) == {build.pk}


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/race-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def secret_of(user: Any) -> str:
    return create_api_token(user, "race").secret


def test_a_users_limit_admits_exactly_n_of_200_at_once(repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 100  # the user's own limit is the one that binds
    n = 7
    user = UserFactory()
    Quota.objects.create(scope="user", user=user, values={"sessions": n})
    secret = secret_of(user)
    replies, peak = storm([(secret, {"repo_url": repo.url})] * REQUESTS)
    assert_exactly(replies, peak, n)
    assert Session.objects.filter(user=user, team__isnull=True).count() == n
    assert Session.objects.count() == n
    assert_one_shared_build(repo.url, replies)


def test_a_team_pool_admits_exactly_n_of_200_from_its_members_at_once(crew, repo):
    n = 5
    team, owner = crew.team, crew.owner_m
    extra = [Membership.objects.create(team=team, user=UserFactory(), role=Role.MEMBER)
             for _ in range(2)]  # fmt: skip
    members = [crew.owner_m, crew.admin_m, crew.member_m, *extra]
    # each member may run 50 (set while the pool was larger), far more than the pool's n
    quotas.set_team_quota(owner, {"sessions": 200})
    for membership in members:
        assert quotas.set_member_quota(owner, membership, {"sessions": 50})["sessions"] == 50
    assert quotas.set_team_quota(owner, {"sessions": n})["sessions"] == n
    secrets = [secret_of(m.user) for m in members]
    body = {"repo_url": repo.url, "team": team.slug}
    replies, peak = storm([(secrets[i % len(secrets)], body) for i in range(REQUESTS)])
    assert_exactly(replies, peak, n)
    assert Session.objects.filter(team=team).count() == n
    assert Session.objects.count() == n
    assert_one_shared_build(repo.url, replies)


def test_a_members_cap_admits_exactly_n_of_200_at_once_within_a_larger_pool(crew, repo):
    n = 3
    owner, member = crew.owner_m, crew.member_m
    quotas.set_team_quota(owner, {"sessions": 50})
    assert quotas.set_member_quota(owner, member, {"sessions": n})["sessions"] == n
    body = {"repo_url": repo.url, "team": crew.team.slug}
    replies, peak = storm([(secret_of(member.user), body)] * REQUESTS)
    assert_exactly(replies, peak, n)
    refusal = next(r.body for r in replies if r.status == 429)
    assert "your limit in Ocean Lab" in refusal["detail"]  # the member's cap, not the pool
    assert Session.objects.filter(team=crew.team, user=member.user).count() == n
    assert Session.objects.count() == n
    assert_one_shared_build(repo.url, replies)
