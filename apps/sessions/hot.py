"""Hot servers: ready servers of the environments visitors launch most, so that a launch
is a handover instead of a server start.

A hot server is an ordinary ``Session`` with ``spare`` set, started through the hub like any
launch with a hub user of its own (``h<build>-<random>``: its token and cookie path are its
own) and an owner id of its own (its own sandbox uid). It mounts nothing, so only a launch
that mounts nothing can take it: a visitor's (no account, no team; the ``/v2/`` and
``/build/`` routes of mybinder's badges). A signed-in launch mounts the person's home volume,
which a running sandbox cannot gain and whose files belong to the person's own uid: those
launches start their server as before. (A workshop's warm seats are the same mechanism for
its attendees: apps.workshops.)

``take`` runs inside the launch's transaction, after admission: it locks one spare of the
same build and size with ``SELECT … FOR UPDATE SKIP LOCKED`` (two visitors never get the same
one), gives it to the visitor (owner, urlpath, URL), clears its launch log and says it was
waiting. ``fill`` (beat every 15 s, and after every handover) keeps one spare per environment
in turn for the environments visitors launched most in ``BINDERY_HOT_WINDOW``, at most
``BINDERY_HOT_SERVERS`` and ``BINDERY_HOT_MEMORY`` (their memory limits) in all; a spare
waiting longer than ``BINDERY_HOT_IDLE``, or whose environment dropped out, is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.builds.backends.disk import parse_size
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.events import add_event
from apps.sessions.models import Session, SessionEvent
from portal.utils import advisory_xact_lock

log = logging.getLogger(__name__)

# what a spare can be in: started and not yet stopping
WAITING = (Session.Status.LAUNCHING, Session.Status.READY)


def spares() -> Any:
    return Session.objects.filter(spare=True, status__in=WAITING)


def take(build: Build, admission: Any, *, anonymous_owner: str, urlpath: str) -> Session | None:
    """The visitor's session: a spare of ``build`` of the admitted size, handed over (ready
    ones first); None when there is none. Call inside the launch's transaction."""
    if build.status != Build.Status.READY or settings.BINDERY_HOT_SERVERS <= 0:
        return None
    candidates = spares().filter(build=build, memory_bytes=admission.memory_bytes,
                                 max_processes=admission.max_processes)  # fmt: skip
    candidates = (candidates.filter(cpu__isnull=True) if admission.cpu is None
                  else candidates.filter(cpu=admission.cpu))  # fmt: skip
    spare = (
        candidates.select_for_update(skip_locked=True, of=("self",))
        .order_by("-status", "created_at")  # ready before launching
        .first()
    )
    if spare is None:
        return None
    now = timezone.now()
    spare.spare = False
    spare.anonymous_owner = anonymous_owner
    spare.urlpath = urlpath
    spare.handed_over_at = spare.keepalive_at = now
    fields = ["spare", "anonymous_owner", "urlpath", "handed_over_at", "keepalive_at"]
    if spare.status == Session.Status.READY:
        spare.url = services.session_url(spare)
        fields.append("url")
        # the visitor's launch log starts here: the spare's own start is not theirs to read
        SessionEvent.objects.filter(session=spare).delete()
        spare.events_size = 0
        fields.append("events_size")
    spare.save(update_fields=fields)
    if spare.status == Session.Status.READY:
        add_event(spare, "ready", "A server of this environment was ready and waiting: opening it.")
    else:
        add_event(spare, "launching", "A server of this environment is already starting.")
    transaction.on_commit(_enqueue_fill)
    return spare


def _enqueue_fill() -> None:
    from apps.sessions.tasks import fill_hot_pool

    try:
        fill_hot_pool.delay()
    except Exception:
        log.warning("could not enqueue fill_hot_pool; beat will run it")


def most_launched(now: datetime) -> list[int]:
    """Build ids of the ready environments visitors launched most in the window (at least
    ``BINDERY_HOT_MIN_LAUNCHES`` times), most launched first. A spare never taken is no
    launch; a spare handed over is one, when it was handed over."""
    since = now - timedelta(seconds=settings.BINDERY_HOT_WINDOW)
    rows = (
        Session.objects.filter(Q(created_at__gte=since) | Q(handed_over_at__gte=since),
                               user__isnull=True, team__isnull=True, workshop__isnull=True,
                               spare=False, build__status=Build.Status.READY)
        .values("build_id").annotate(n=Count("id"))
        .filter(n__gte=settings.BINDERY_HOT_MIN_LAUNCHES)
        .order_by("-n", "-build_id")
    )  # fmt: skip
    return [row["build_id"] for row in rows[: settings.BINDERY_HOT_SERVERS]]


def _size() -> tuple[int, int, float | None]:
    """The size a visitor's launch is admitted with (a spare must match it to be taken)."""
    from apps.quotas.services import preview

    admission, _, _ = preview(None, anonymous_owner="hot-size")
    if admission is None:  # visitors are refused outright: no spare could be taken
        return 0, 0, None
    return admission.memory_bytes, admission.max_processes, admission.cpu


def fill(now: datetime | None = None) -> dict[str, Any]:
    """Stop the spares no longer wanted, start the ones missing. Returns {"started": [build
    ids], "stopped": [session ids]}. One filler at a time (beat and the refills after
    handovers run at once)."""
    now = now or timezone.now()
    with transaction.atomic():
        advisory_xact_lock("bindery-hot-pool")
        return _fill(now)


def _fill(now: datetime) -> dict[str, Any]:
    report: dict[str, Any] = {"started": [], "stopped": []}
    wanted = most_launched(now) if settings.BINDERY_HOT_SERVERS > 0 else []
    memory, processes, cpu = _size()
    idle = now - timedelta(seconds=settings.BINDERY_HOT_IDLE)
    keep: list[Session] = []
    for spare in spares().select_related("build"):
        if (
            spare.build_id not in wanted
            or spare.memory_bytes != memory
            or spare.cpu != cpu
            or (spare.status == Session.Status.READY and spare.ready_at and spare.ready_at < idle)
        ):
            _stop(spare)
            report["stopped"].append(spare.pk)
        else:
            keep.append(spare)
    if not wanted or memory <= 0:
        return report
    budget_count = settings.BINDERY_HOT_SERVERS - len(keep)
    budget_memory = parse_size(settings.BINDERY_HOT_MEMORY) - sum(s.memory_bytes for s in keep)
    have = Counter(s.build_id for s in keep)
    builds = {b.pk: b for b in Build.objects.filter(pk__in=wanted)}
    for round_ in range(1, settings.BINDERY_HOT_SERVERS + 1):  # one each in turn
        for build_id in wanted:
            if budget_count <= 0 or budget_memory < memory:
                return report
            if have[build_id] >= round_:
                continue
            _start(builds[build_id], memory, processes, cpu)
            have[build_id] += 1
            budget_count -= 1
            budget_memory -= memory
            report["started"].append(build_id)
    return report


def _start(build: Build, memory: int, processes: int, cpu: float | None) -> Session:
    return services.open_session(
        build, user=None, anonymous_owner=f"hot-{secrets.token_hex(12)}", team=None,
        hub_user=services.hot_hub_user(build.pk), urlpath="", memory_bytes=memory,
        max_processes=processes, cpu=cpu, spare=True,
    )  # fmt: skip


def _stop(spare: Session) -> None:
    with contextlib.suppress(services.SessionNotStoppable):
        services.request_stop(spare, "This hot server was not needed any more.")
