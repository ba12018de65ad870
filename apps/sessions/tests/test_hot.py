"""Hot servers' bookkeeping without a hub: real database rows, real git repositories over
HTTP for the builds' resolution; no server starts (the launch tasks are queued on the real
broker and nobody runs them). The handover to a visitor through a real hub is in
test_hot_hub.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.builds.services import request_build, resolve_input
from apps.quotas.services import preview
from apps.sessions import hot, services
from apps.sessions.models import Session, SessionEvent
from apps.testing import requires

pytestmark = pytest.mark.django_db

GIB = 1024**3


@pytest.fixture
def hot_settings(settings: Any) -> Any:
    settings.BINDERY_HOT_SERVERS = 2
    settings.BINDERY_HOT_MEMORY = "8G"
    settings.BINDERY_HOT_MIN_LAUNCHES = 2
    settings.BINDERY_SESSION_MEMORY = "1G"
    return settings


@pytest.fixture
def make_build(git_host: Any) -> Callable[[], Build]:
    def make() -> Build:
        repo = git_host.create_repo(f"org/hot-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})
        resolved, _ = resolve_input(None, repo_url=repo.url)
        build = request_build(resolved, None).build
        Build.objects.filter(pk=build.pk).update(status=Build.Status.READY, result={})
        return Build.objects.get(pk=build.pk)

    return make


def visitor_launches(build: Build, n: int, *, ago: timedelta = timedelta(minutes=5)) -> None:
    for _ in range(n):
        Session.objects.create(build=build, anonymous_owner=uuid.uuid4().hex, status="stopped",
                               hub_user="anon-x", created_at=timezone.now() - ago)  # fmt: skip


def spare_of(build: Build, *, status: str = "ready", ready_ago: timedelta = timedelta()) -> Session:
    session = hot._start(build, *hot._size())
    ready_at = timezone.now() - ready_ago
    Session.objects.filter(pk=session.pk).update(status=status, ready_at=ready_at)
    session.refresh_from_db()
    return session


def admission() -> Any:
    found, refused, _ = preview(None, anonymous_owner="someone")
    assert refused is None and found is not None
    return found


def test_spares_go_to_the_environments_visitors_launched_most(hot_settings, make_build):
    a, b, c, d = make_build(), make_build(), make_build(), make_build()
    visitor_launches(a, 3)
    visitor_launches(b, 2)
    visitor_launches(c, 1)  # fewer than BINDERY_HOT_MIN_LAUNCHES
    visitor_launches(d, 5, ago=timedelta(days=2))  # outside the window
    people = UserFactory()
    for _ in range(5):  # signed-in launches mount a volume: no spare could serve them
        Session.objects.create(build=d, user=people, status="stopped", hub_user="u1")
    assert hot.most_launched(timezone.now()) == [a.pk, b.pk]
    assert hot.fill()["started"] == [a.pk, b.pk]
    made = Session.objects.filter(spare=True)
    assert sorted(made.values_list("build_id", flat=True)) == sorted([a.pk, b.pk])
    assert all(s.user is None and s.anonymous_owner.startswith("hot-") for s in made)
    assert all(services.WARM_HUB_USER.fullmatch(s.hub_user) for s in made)
    assert {s.memory_bytes for s in made} == {GIB} and made.filter(status="launching").count() == 2
    assert hot.fill()["started"] == []  # the pool is full


def test_the_count_and_the_memory_bound_the_pool(hot_settings, make_build):
    a, b = make_build(), make_build()
    visitor_launches(a, 4)
    visitor_launches(b, 2)
    hot_settings.BINDERY_HOT_SERVERS = 3
    assert hot.fill()["started"] == [a.pk, b.pk, a.pk]  # one each in turn, then again
    Session.objects.filter(spare=True).update(status="stopped")
    hot_settings.BINDERY_HOT_MEMORY = "2.5G"  # two 1 GiB servers fit, not three
    assert hot.fill()["started"] == [a.pk, b.pk]


def test_spares_not_wanted_or_waiting_too_long_are_stopped_and_replaced(hot_settings,
                                                                        make_build):  # fmt: skip
    a, b = make_build(), make_build()
    visitor_launches(a, 3)
    idle = timedelta(seconds=hot_settings.BINDERY_HOT_IDLE + 1)
    stale = spare_of(a, ready_ago=idle)
    fresh = spare_of(a, ready_ago=timedelta(seconds=5))
    forgotten = spare_of(b)  # b is launched by nobody now
    report = hot.fill()
    assert sorted(report["stopped"]) == sorted([stale.pk, forgotten.pk])
    assert report["started"] == [a.pk]  # the stale one's place
    assert Session.objects.get(pk=stale.pk).status == "stopping"
    assert Session.objects.get(pk=forgotten.pk).status == "stopping"
    assert Session.objects.get(pk=fresh.pk).status == "ready"
    hot_settings.BINDERY_HOT_SERVERS = 0  # turned off: every spare goes
    assert len(hot.fill()["stopped"]) == 2
    assert not hot.spares().exists()


def test_a_visitor_takes_a_ready_spare_of_their_environment_and_size(hot_settings, make_build):
    a, b = make_build(), make_build()
    other = spare_of(b)
    spare = spare_of(a)
    Session.objects.filter(pk=spare.pk).update(url="http://hub/user/h/s/")
    assert SessionEvent.objects.filter(session=spare).exists()  # its own start's log
    with transaction.atomic():
        taken = hot.take(a, admission(), anonymous_owner="visitor-1", urlpath="lab/tree/x.ipynb")
    assert taken is not None and taken.pk == spare.pk
    taken.refresh_from_db()
    assert (taken.spare, taken.anonymous_owner, taken.status) == (False, "visitor-1", "ready")
    assert taken.url.endswith(f"/{taken.server_name}/lab/tree/x.ipynb")
    assert taken.handed_over_at is not None
    # the visitor's log starts at the handover
    assert list(SessionEvent.objects.filter(session=taken).values_list("phase", "n")) == [
        ("ready", 1)
    ]
    with transaction.atomic():  # none left of a; b's is not a's
        assert hot.take(a, admission(), anonymous_owner="visitor-2", urlpath="") is None
    hot_settings.BINDERY_SESSION_MEMORY = "2G"  # visitors now get another size: b's no longer fits
    with transaction.atomic():
        assert hot.take(b, admission(), anonymous_owner="visitor-3", urlpath="") is None
    assert Session.objects.get(pk=other.pk).spare


def test_spares_are_not_culled_as_idle_or_old(hot_settings, make_build, settings):
    settings.BINDERY_HUB_API_URL = "http://127.0.0.1:9/hub/api"  # no hub: cull uses the rows
    settings.BINDERY_IDLE_TIMEOUT = 60
    settings.BINDERY_MAX_AGE = 600
    a = make_build()
    spare = spare_of(a, ready_ago=timedelta(minutes=20))
    Session.objects.filter(pk=spare.pk).update(created_at=timezone.now() - timedelta(hours=1))
    taken_before = spare_of(a, ready_ago=timedelta(minutes=20))
    Session.objects.filter(pk=taken_before.pk).update(spare=False)  # control: a visitor's
    assert services.cull_sessions() == [taken_before.pk]
    assert Session.objects.get(pk=spare.pk).status == "ready"


@requires(connection.vendor == "postgresql", reason="SKIP LOCKED needs PostgreSQL (DATABASE_URL)")
@pytest.mark.django_db(transaction=True)
def test_visitors_at_once_never_share_a_spare(hot_settings, make_build):
    a = make_build()
    spares = {spare_of(a).pk, spare_of(a).pk}
    size = admission()
    people = 6
    barrier = threading.Barrier(people)

    def visit(n: int) -> int | None:
        try:
            barrier.wait(timeout=30)
            with transaction.atomic():
                taken = hot.take(a, size, anonymous_owner=f"visitor-{n}", urlpath="")
                return taken.pk if taken is not None else None
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=people) as pool:
        got = list(pool.map(visit, range(people)))
    handed = [pk for pk in got if pk is not None]
    assert sorted(handed) == sorted(spares) and got.count(None) == people - 2
    owners = set(Session.objects.filter(pk__in=spares).values_list("anonymous_owner", flat=True))
    assert len(owners) == 2 and all(o.startswith("visitor-") for o in owners)
