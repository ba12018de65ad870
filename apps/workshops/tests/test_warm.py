"""Warm servers' life around the handover, without a hub: real database rows, real git
repositories over HTTP, and the real Celery broker (Redis), whose queue is read to see what
was enqueued. The flow with a real hub is in test_flow.py."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas.models import Quota
from apps.sessions import services as sessions
from apps.sessions.models import Session
from apps.sessions.signals import session_ready
from apps.workshops import services
from apps.workshops.models import Workshop
from portal.redis import get_redis

pytestmark = pytest.mark.django_db

TEND = "apps.workshops.tasks.tend_workshops"


def queued(task: str) -> int:
    """How many messages for ``task`` wait in Celery's default queue on the broker."""
    key = f"{django_settings.REDIS_KEY_PREFIX}:celery:celery"
    messages = (json.loads(m) for m in get_redis().lrange(key, 0, -1))
    return sum(1 for m in messages if m.get("headers", {}).get("task") == task)


@pytest.fixture
def owner() -> Any:
    user: Any = UserFactory()
    Quota.objects.create(scope="user", user=user, values={"sessions": 30})
    return user


@pytest.fixture
def repo(git_host: Any) -> Any:
    return git_host.create_repo(f"org/warm-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def open_workshop(owner: Any, repo: Any, *, seats: int = 3) -> Workshop:
    now = timezone.now()
    w = services.create_workshop(owner, title="Warm", repo_url=repo.url, seats=seats,
                                 opens_at=now - timedelta(minutes=1),
                                 closes_at=now + timedelta(hours=10), guests=True)  # fmt: skip
    Build.objects.filter(pk=w.build_id or 0).update(status="ready", result={})
    return Workshop.objects.select_related("build").get(pk=w.pk)


def unclaimed(workshop: Workshop) -> Any:
    return Session.objects.filter(workshop=workshop, seat__isnull=True)


def test_a_server_handed_over_late_ages_from_the_handover(owner, repo, settings):
    settings.BINDERY_MAX_AGE = 3600
    settings.BINDERY_IDLE_TIMEOUT = 3600
    settings.BINDERY_HUB_API_URL = "http://127.0.0.1:9/hub/api"  # no hub: cull uses the rows
    w = open_workshop(owner, repo)
    services.fill_warm_pools()
    long_ago = timezone.now() - timedelta(hours=2)  # warmed longer ago than the maximum age
    unclaimed(w).update(status=Session.Status.READY, created_at=long_ago, ready_at=long_ago)
    joined = services.join(w.code, name="Late")
    assert joined.warm
    session = Session.objects.get(pk=joined.session.pk)
    assert session.handed_over_at is not None and session.handed_over_at > long_ago
    # culling sees a fresh session; an ordinary one of the same age is stopped (control)
    control = Session.objects.get(pk=unclaimed(w).first().pk)
    control.workshop = None
    control.save(update_fields=["workshop"])
    assert sessions.cull_sessions() == [control.pk]
    assert Session.objects.get(pk=session.pk).status == Session.Status.READY
    # a server that waits may wait up to the recycle age: its token outlives that too
    assert sessions._token_lifetime(session) >= (
        settings.BINDERY_MAX_AGE + settings.BINDERY_WORKSHOP_WARM_RECYCLE
    )


def test_warm_servers_waiting_past_the_recycle_age_are_replaced(owner, repo, settings):
    settings.BINDERY_WORKSHOP_WARM_MAX = 2
    settings.BINDERY_WORKSHOP_WARM_STARTS = 2
    settings.BINDERY_WORKSHOP_WARM_RECYCLE = 600
    w = open_workshop(owner, repo)
    assert services.fill_warm_pools() == {w.pk: 2}
    now = timezone.now()
    first, second = unclaimed(w).order_by("pk")
    Session.objects.filter(pk=first.pk).update(status=Session.Status.READY,
                                               ready_at=now - timedelta(seconds=601))  # fmt: skip
    Session.objects.filter(pk=second.pk).update(status=Session.Status.READY,
                                                ready_at=now - timedelta(seconds=599))  # fmt: skip
    assert services.fill_warm_pools() == {w.pk: 1}
    assert Session.objects.get(pk=first.pk).status == Session.Status.STOPPING
    assert Session.objects.get(pk=second.pk).status == Session.Status.READY
    waiting = unclaimed(w).exclude(status=Session.Status.STOPPING)
    assert waiting.count() == 2 and first.pk not in {s.pk for s in waiting}


def test_a_warm_server_becoming_ready_asks_for_the_next_one(owner, repo):
    w = open_workshop(owner, repo)
    services.fill_warm_pools()
    warm = unclaimed(w).first()
    assert warm is not None
    before = queued(TEND)
    session_ready.send(sender=Session, session_id=warm.pk)
    assert queued(TEND) == before + 1
    # a seated server becoming ready changes nothing in the pool: no tend
    seated = services.join(w.code, name="Ada").session
    before = queued(TEND)
    session_ready.send(sender=Session, session_id=seated.pk)
    assert queued(TEND) == before
