"""Build requests, visibility, cancelling and reaping, against the real database and a
real git server for resolution. The builder itself is exercised in test_local_builder.py
and end to end in test_end_to_end.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.builds import selectors, services
from apps.builds.models import Build
from apps.repos.services import create_credential
from portal.errors import NotFound

pytestmark = pytest.mark.django_db


def request(user, repo, ref="main"):
    resolved, credential = services.resolve_input(user, repo_url=repo.url, ref=ref)
    return services.request_build(resolved, user, credential=credential)


def test_request_creates_one_build_and_enqueues_on_commit(
    alice, public_repo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        first = request(alice, public_repo)
    assert first.created
    assert len(callbacks) == 1  # run_build is enqueued only once the row is committed
    build = first.build
    assert (build.status, build.resolved_ref, build.scope) == ("pending", public_repo.head, "")
    again = request(alice, public_repo)
    assert not again.created and again.build.pk == build.pk


def test_a_new_commit_is_a_new_build(alice, public_repo, git_host):
    first = request(alice, public_repo).build
    git_host.commit(public_repo, {"notebook.ipynb": "{}"})
    second = request(alice, public_repo).build
    assert second.pk != first.pk
    assert second.resolved_ref == public_repo.head


@pytest.mark.django_db(transaction=True)
def test_simultaneous_requests_give_one_build(alice, public_repo):
    resolved, _ = services.resolve_input(alice, repo_url=public_repo.url, ref="main")
    barrier = threading.Barrier(4)
    results: list[int] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(services.request_build(resolved, alice).build.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert len(set(results)) == 1
    assert Build.objects.count() == 1


def test_public_build_is_visible_to_other_users_private_is_not(
    alice, bob, public_repo, private_repo, git_host
):
    public = request(alice, public_repo).build
    create_credential(alice, host=git_host.host, token=git_host.token,
                      username=git_host.username, label="lab")  # fmt: skip
    private = request(alice, private_repo).build
    assert private.scope and private.credential_id
    assert selectors.get_build_for_user(bob, public.pk) == public
    with pytest.raises(NotFound):
        selectors.get_build_for_user(bob, private.pk)
    assert selectors.get_build_for_user(alice, private.pk) == private


def test_cancel_pending_build(alice, public_repo):
    build = request(alice, public_repo).build
    services.cancel_build(alice, build)
    build.refresh_from_db()
    assert (build.status, build.error_code) == ("cancelled", "BUILD_CANCELLED")


def test_cancel_running_build_asks_the_worker(alice, public_repo):
    build = request(alice, public_repo).build
    Build.objects.filter(pk=build.pk).update(status="running")
    services.cancel_build(alice, build)
    build.refresh_from_db()
    assert build.status == "running" and build.cancel_requested


def test_only_the_requester_cancels(alice, bob, public_repo):
    from portal.errors import PermissionDenied

    build = request(alice, public_repo).build
    with pytest.raises(PermissionDenied):
        services.cancel_build(bob, build)
    build.refresh_from_db()
    assert build.status == "pending"


def test_cancel_finished_build_is_409(alice, public_repo):
    build = request(alice, public_repo).build
    Build.objects.filter(pk=build.pk).update(status="ready")
    build.refresh_from_db()
    with pytest.raises(services.BuildNotCancellable) as err:
        services.cancel_build(alice, build)
    assert err.value.status == 409


def test_reaper_fails_builds_whose_worker_is_gone(alice, public_repo, git_host):
    lost = request(alice, public_repo).build
    now = timezone.now()
    Build.objects.filter(pk=lost.pk).update(
        status="running", started_at=now, heartbeat_at=now - timedelta(minutes=5)
    )
    git_host.commit(public_repo, {"a.txt": "1"})
    alive = request(alice, public_repo).build
    Build.objects.filter(pk=alive.pk).update(status="running", started_at=now, heartbeat_at=now)
    assert services.reap_stale_builds(now) == [lost.pk]
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert (lost.status, lost.error_code) == ("failed", "BUILD_LOST")
    assert "worker" in lost.error_message
    assert alive.status == "running"
    assert services.reap_stale_builds(now) == []  # safe to run twice


def test_reaper_fails_builds_that_never_started(alice, public_repo):
    build = request(alice, public_repo).build
    Build.objects.filter(pk=build.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert services.reap_stale_builds() == [build.pk]
    build.refresh_from_db()
    assert "never started" in build.error_message


def test_execute_build_twice_is_harmless_once_final(alice, public_repo):
    build = request(alice, public_repo).build
    Build.objects.filter(pk=build.pk).update(status="failed")
    assert services.execute_build(build.pk) is None
    build.refresh_from_db()
    assert build.status == "failed" and build.attempts == 0


def test_enqueue_failure_marks_build_failed(alice, public_repo, settings):
    from unittest import mock

    build = request(alice, public_repo).build
    # The broker is an outside dependency here: make it refuse the message.
    with mock.patch("apps.builds.tasks.run_build.delay", side_effect=ConnectionError("down")):
        services.enqueue_build(build.pk)
    build.refresh_from_db()
    assert (build.status, build.error_code) == ("failed", "QUEUE_UNAVAILABLE")


def test_a_build_past_the_builds_at_once_waits_queued_not_on_a_thread(alice, public_repo,
                                                                      monkeypatch):  # fmt: skip
    """The worker's pool is threads: a build past BINDERY_BUILDS_AT_ONCE goes back to the
    queue (the real broker, Redis, read here) and stays pending instead of holding one."""
    import json

    from django.conf import settings

    from apps.builds import tasks
    from portal.redis import get_redis

    def queued() -> list[dict]:
        key = f"{settings.REDIS_KEY_PREFIX}:celery:celery"
        messages = [json.loads(m) for m in get_redis().lrange(key, 0, -1)]
        return [m for m in messages if m["headers"]["task"] == "apps.builds.tasks.run_build"]

    build = request(alice, public_repo).build
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(tasks, "_BUILDS", slots)
    assert slots.acquire(blocking=False)  # the one slot is busy with another build
    before = len(queued())
    assert tasks.run_build.apply(args=(build.pk,)).get() is None
    again = queued()
    assert len(again) == before + 1 and again[0]["headers"]["eta"]  # later, not at once
    build.refresh_from_db()
    assert build.status == "pending" and build.attempts == 0
    slots.release()  # and the slot is given back after a build, whatever its end
    tasks.run_build.apply(args=(-1,))
    assert slots.acquire(blocking=False)
