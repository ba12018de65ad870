"""A room joining at once: 50 guests POST /api/v1/workshops/join/ together (threads behind
a barrier, each its own database connection) for 30 seats, on PostgreSQL where the
workshop's row lock is real. Exactly 30 are seated, 20 told it is full, and nothing is
half-made: every seat has its session, every session its seat, no server is handed over
twice. Cold (every seat starts a server) and warm (10 ready servers to hand over)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas.models import Quota
from apps.sessions.models import Session
from apps.testing import require, requires
from apps.workshops import services
from apps.workshops.models import Seat, Workshop

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires(connection.vendor == "postgresql",
             reason="concurrent joins need PostgreSQL's row locks (set DATABASE_URL)"),
]  # fmt: skip

PEOPLE, SEATS, WARM = 50, 30, 10


def _open_workshop(git_host: Any) -> Workshop:
    repo = git_host.create_repo(f"org/room-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})
    owner: Any = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 60})
    now = timezone.now()
    w = services.create_workshop(owner, title="Room", repo_url=repo.url, seats=SEATS,
                                 opens_at=now - timedelta(minutes=1),
                                 closes_at=now + timedelta(hours=2), guests=True)  # fmt: skip
    assert w.build_id is not None
    Build.objects.filter(pk=w.build_id).update(status="ready", result={})
    return Workshop.objects.select_related("build").get(code=w.code)


def _room_joins(code: str) -> list[tuple[int, dict[str, Any]]]:
    barrier = threading.Barrier(PEOPLE)

    def attempt(n: int) -> tuple[int, dict[str, Any]]:
        client = APIClient()
        try:
            barrier.wait(timeout=30)
            response = client.post("/api/v1/workshops/join/",
                                   {"code": code, "name": f"Guest {n}"}, format="json")  # fmt: skip
            return response.status_code, response.json()
        finally:
            connections.close_all()  # this thread's connection, not left for the next test

    with ThreadPoolExecutor(max_workers=PEOPLE) as pool:
        return list(pool.map(attempt, range(PEOPLE)))


@pytest.mark.parametrize("pool", ["cold", "warm"])
def test_fifty_join_thirty_seats_at_once(git_host, settings, pool):
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        limit = int(cursor.fetchone()[0])
    require(limit > PEOPLE + 10, f"PostgreSQL allows {limit} connections; {PEOPLE} threads")
    settings.BINDERY_WORKSHOP_WARM_MAX = WARM
    settings.BINDERY_WORKSHOP_WARM_STARTS = WARM
    w = _open_workshop(git_host)
    warm_ids: set[int] = set()
    if pool == "warm":
        assert services.fill_warm_pools() == {w.pk: WARM}
        warm = Session.objects.filter(workshop=w, seat__isnull=True)
        warm.update(status=Session.Status.READY, ready_at=timezone.now())
        warm_ids = set(warm.values_list("pk", flat=True))
        assert len(warm_ids) == WARM

    started = time.monotonic()
    results = _room_joins(w.code)
    elapsed = time.monotonic() - started

    codes = Counter(status for status, _ in results)
    assert codes == {201: SEATS, 409: PEOPLE - SEATS}, codes
    refused = [body for status, body in results if status == 409]
    assert {body["error"] for body in refused} == {"WORKSHOP_FULL"}
    seated = [body for status, body in results if status == 201]

    # nothing half-made: seats and sessions pair one to one, the refused made neither
    seats = Seat.objects.filter(workshop=w)
    sessions = Session.objects.filter(workshop=w)
    assert seats.count() == SEATS and sessions.count() == SEATS
    assert not seats.filter(session__isnull=True).exists()
    assert not sessions.filter(seat__isnull=True).exists()
    session_ids = set(sessions.values_list("pk", flat=True))
    assert set(seats.values_list("session_id", flat=True)) == session_ids
    assert {b["session"]["id"] for b in seated} == session_ids
    assert {b["seat"]["id"] for b in seated} == set(seats.values_list("pk", flat=True))
    refused_names = {f"Guest {n}" for n in range(PEOPLE)} - {b["seat"]["name"] for b in seated}
    assert len(refused_names) == PEOPLE - SEATS
    assert not seats.filter(name__in=refused_names).exists()
    # each seat is its guest's: their own token, their own session
    assert len({b["guest_token"] for b in seated}) == SEATS
    owners = dict(sessions.values_list("pk", "anonymous_owner"))
    assert all(owners[b["session"]["id"]] == b["guest_token"] for b in seated)

    handed = [b["session"]["id"] for b in seated if b["warm"]]
    if pool == "warm":
        # exactly the ten ready servers were handed over, none twice; the rest started cold
        assert len(handed) == WARM and set(handed) == warm_ids
        assert sessions.exclude(pk__in=warm_ids).filter(status="launching").count() == SEATS - WARM
    else:
        assert handed == []
        assert set(sessions.values_list("status", flat=True)) == {"launching"}
    print(f"\n{pool}: {PEOPLE} joins for {SEATS} seats in {elapsed:.2f} s "
          f"({codes[201]} seated, {codes[409]} full, {len(handed)} warm)")  # fmt: skip


def test_fillers_at_once_never_start_more_than_the_machine_holds(git_host, settings):
    """Beat's round and the refills queued by joins run fill_warm_pools at the same time:
    under the pool's lock they start BINDERY_WORKSHOP_WARM_MAX servers in all, not each."""
    settings.BINDERY_WORKSHOP_WARM_MAX = 6
    settings.BINDERY_WORKSHOP_WARM_STARTS = SEATS
    w = _open_workshop(git_host)
    fillers = 8
    barrier = threading.Barrier(fillers)

    def fill(_: int) -> int:
        try:
            barrier.wait(timeout=30)
            return sum(services.fill_warm_pools().values())
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=fillers) as pool:
        started = list(pool.map(fill, range(fillers)))
    assert sum(started) == 6 and max(started) == 6, started  # one filler did it all
    assert Session.objects.filter(workshop=w, seat__isnull=True).count() == 6
