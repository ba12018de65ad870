"""Celery entry points for builds: thin, taking ids, safe to run twice."""

from __future__ import annotations

import threading
from typing import Any

from celery import shared_task
from django.conf import settings

from apps.builds import services

# The builder enforces BINDERY_BUILD_TIMEOUT itself; these limits are the backstop.
_LIMIT = settings.BINDERY_BUILD_TIMEOUT
_BUILDS = threading.BoundedSemaphore(max(1, settings.BINDERY_BUILDS_AT_ONCE))
_REQUEUE_SECONDS = 2


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=services.MAX_ATTEMPTS - 1,
    soft_time_limit=_LIMIT + 60,
    time_limit=_LIMIT + 120,
)
def run_build(self: Any, build_id: int) -> str | None:
    """Build ``build_id``. Returns the final status, or None if there was nothing to do.

    At most ``BINDERY_BUILDS_AT_ONCE`` run in a worker process at once: the worker's pool is
    threads, sized for launches (which mostly wait), and a burst of builds must not take
    every thread nor every core. A build past that is queued again (still pending) rather
    than holding a thread while it waits."""
    if not _BUILDS.acquire(blocking=False):
        run_build.apply_async((build_id,), countdown=_REQUEUE_SECONDS)
        return None
    try:
        return services.execute_build(build_id, worker=self.request.hostname or "worker")
    except services.TransientBuildError as exc:
        raise self.retry(exc=exc, countdown=15) from exc
    finally:
        _BUILDS.release()


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def reap_stale_builds() -> list[int]:
    """Fail builds whose worker died, that never started or ran past their time."""
    return services.reap_stale_builds()


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def prune_build_logs() -> int:
    """Delete the stored logs of builds finished more than BINDERY_BUILD_LOG_RETENTION_DAYS
    ago (the builds stay). Returns the number of lines deleted; safe to run twice."""
    return services.prune_build_logs()


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1860)
def prune_environments() -> int:
    """Remove the least recently used environments and checkouts down to
    BINDERY_BUILD_DISK_BUDGET (never one a session uses, nor one a build holds), as
    ``manage.py prune_builds`` does. Returns how many entries went; safe to run twice."""
    from apps.builds.backends import disk
    from apps.builds.selectors import environment_keys_in_use

    if settings.BINDERY_BACKEND != "local":
        # kubernetes: environments are images in the registry, pruned by its own retention
        # policy (the portal neither owns nor can measure them); finished build pods go with
        # clean_build_pods.
        return 0
    budget = disk.parse_size(settings.BINDERY_BUILD_DISK_BUDGET)
    return len(disk.prune(budget, environment_keys_in_use()).removed)


@shared_task(acks_late=True, soft_time_limit=240, time_limit=270)
def clean_build_pods() -> list[str]:
    """kubernetes backend: delete build pods finished more than BINDERY_K8S_BUILD_POD_TTL
    ago (and abandoned ones), and credential Secrets nothing needs. Returns the names of the
    pods deleted ([] with another backend); safe to run twice and beside running builds."""
    if settings.BINDERY_BACKEND != "kubernetes":
        return []
    from apps.builds.backends.kubernetes.cleaner import clean_build_pods as clean
    from apps.builds.backends.kubernetes.cluster import Cluster, core_api
    from apps.builds.backends.kubernetes.options import BuildOptions

    options = BuildOptions.from_settings()
    return clean(Cluster(core_api(), options.namespace, options.api_timeout), options)
