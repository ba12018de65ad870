"""The usage ledger: writing its rows (append-only, idempotent) and summing them.

Session time is written per clock minute: beat writes every whole minute a session ran up
to now (``account_sessions``), the stop writes the last, partial one (``session_ended``).
Each row's key is ``session:<id>:<minute>``, so writing a minute twice — a beat restarted
mid-run, a worker killed between the rows and its cursor, a stop and a beat at once —
keeps one row, and a beat that was down catches up every minute it missed (from the
session's cursor ``accounted_until``, or its ``ready_at``). Time counts from ``ready_at``
(a server that never came up costs nothing) to ``stopped_at``; it is wall time, not
weighted by CPU (each row keeps the session's CPU and memory, so a weighted sum can be
computed from the same rows).

Build time is one row per build that ran (``build:<id>``), from ``started_at`` to
``finished_at``, charged to whoever requested it (and to their team for a team launch);
a launch that reuses a built environment makes no build and costs nothing.

Storage is one row per volume per measurement slot (``storage:<id>:<slot>``): the bytes it
held. Months are calendar months in the site's time zone (``TIME_ZONE``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from apps.quotas.models import UsageRecord

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)


# --- periods ------------------------------------------------------------------------------


def site_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


@dataclass(frozen=True)
class Period:
    """A calendar month in the site's time zone: ``start`` ≤ t < ``end``."""

    first: date

    @property
    def start(self) -> datetime:
        return datetime(self.first.year, self.first.month, 1, tzinfo=site_zone())

    @property
    def end(self) -> datetime:
        year, month = (self.first.year + 1, 1) if self.first.month == 12 else (
            self.first.year, self.first.month + 1)  # fmt: skip
        return datetime(year, month, 1, tzinfo=site_zone())

    @property
    def label(self) -> str:
        return f"{self.first:%Y-%m}"

    @property
    def name(self) -> str:
        return f"{self.first:%B %Y}"

    def previous(self) -> Period:
        return period_of(self.start - timedelta(days=1))


def period_of(moment: datetime) -> Period:
    local = moment.astimezone(site_zone())
    return Period(date(local.year, local.month, 1))


def parse_period(text: str) -> Period:
    """``"2026-11"`` → that month. Raises ValueError for anything else."""
    year, _, month = text.partition("-")
    if not (len(year) == 4 and year.isdigit() and len(month) == 2 and month.isdigit()):
        raise ValueError(text)
    if not (2000 <= int(year) <= 2999 and 1 <= int(month) <= 12):
        raise ValueError(text)
    return Period(date(int(year), int(month), 1))


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# --- writing ------------------------------------------------------------------------------


def _scope(team_id: int | None) -> str:
    return UsageRecord.Scope.TEAM if team_id is not None else UsageRecord.Scope.PERSONAL


def _payer(session: Any) -> tuple[int | None, int | None]:
    """(user id, team id) whose pool a session's time counts against: its owner's and team's,
    or for a workshop's seat the workshop's (its instructor's, or its team's) — attendees,
    guests above all, never pay for a workshop."""
    workshop = session.workshop
    if workshop is not None:
        return workshop.owner_id, workshop.team_id
    return session.user_id, session.team_id


def _session_rows(session: object, start: datetime, end: datetime) -> list[UsageRecord]:
    """Rows for every clock minute of [start, end), the last one partial."""
    from apps.sessions.models import Session

    assert isinstance(session, Session)
    payer = _payer(session)
    rows = []
    minute = floor_minute(start)
    while minute < end:
        lo, hi = max(minute, start), min(minute + MINUTE, end)
        if hi > lo:
            rows.append(
                UsageRecord(
                    key=f"session:{session.pk}:{minute:%Y%m%d%H%M}",
                    kind=UsageRecord.Kind.SESSION,
                    period=period_of(minute).first,
                    start=lo,
                    end=hi,
                    quantity=(hi - lo).total_seconds(),
                    cpu=session.cpu,
                    memory_bytes=session.memory_bytes or None,
                    user_id=payer[0],
                    team_id=payer[1],
                    scope=_scope(payer[1]),
                    anonymous_owner=session.anonymous_owner,
                    session_id=session.pk,
                )
            )
        minute += MINUTE
    return rows


def account_session(session_id: int, now: datetime | None = None) -> int:
    """Write the session's running time not yet in the ledger: whole minutes up to ``now``
    while it runs; up to ``stopped_at`` (the last minute partial) once it has ended.
    Returns the rows written. Safe to run twice, at once, or after a crash.

    The session's row is locked while its rows and cursor are written (one transaction):
    a stop waits, so its ``stopped_at`` is never before a minute written here, and the
    cursor never lags the rows it covers."""
    from apps.sessions.models import Session

    now = now or timezone.now()
    with transaction.atomic():
        session = (
            Session.objects.select_for_update(of=("self",))
            .select_related("workshop")
            .filter(pk=session_id)
            .first()
        )
        if session is None or session.ready_at is None:
            return 0
        ended = session.is_terminal
        end = (session.stopped_at or now) if ended else floor_minute(now)
        begin = session.accounted_until or session.ready_at
        if begin >= end:
            return 0
        rows = _session_rows(session, begin, end)
        keys = {row.key for row in rows}
        present = set(UsageRecord.objects.filter(key__in=keys).values_list("key", flat=True))
        fresh = [row for row in rows if row.key not in present]
        UsageRecord.objects.bulk_create(fresh, ignore_conflicts=True)
        _after_rows_written(session_id)
        Session.objects.filter(pk=session_id).update(accounted_until=end)
    return len(fresh)


def _after_rows_written(session_id: int) -> None:
    """A seam for tests that kill the accounting between the rows and the cursor."""


def session_ended(session_id: int) -> None:
    """The stop's part: the last minutes of an ended session, and its volumes' sizes."""
    from apps.sessions.models import Session, Volume

    try:
        account_session(session_id)
        session = Session.objects.filter(pk=session_id).first()
        if session is None or session.ready_at is None:
            return
        volumes = Volume.objects.filter(
            Q(user_id=session.user_id, user__isnull=False)
            | Q(team_id=session.team_id, team__isnull=False)
        )
        for volume in volumes:
            measure_and_record(volume)
    except Exception:  # the beat catches up: never fail a stop over bookkeeping
        log.exception("could not account the end of session %s; beat will", session_id)


def measure_and_record(volume: object) -> None:
    """Measure the bytes a volume's files use and record them; nothing where the backend
    cannot read them (kubernetes: the claim's size is its quota, enforced by the cluster)."""
    from apps.sessions.services import measure_volume_use

    measured = measure_volume_use(volume)  # type: ignore[arg-type]
    if measured is not None:
        record_storage(measured)


def measure_volumes_in_use() -> int:
    """Measure (and record) every volume an active session mounts, and those never
    measured. Returns how many were measured."""
    from apps.sessions.models import Session, Volume

    active = Session.objects.filter(status__in=Session.ACTIVE)
    volumes = Volume.objects.filter(
        Q(user__in=active.values("user")) | Q(team__in=active.values("team"))
        | Q(size_measured_at__isnull=True)
    )  # fmt: skip
    n = 0
    for volume in volumes:
        try:
            measure_and_record(volume)
            n += 1
        except Exception:
            log.exception("could not measure volume %s", volume.pk)
    return n


def sessions_to_account() -> QuerySet[Any]:
    """Sessions whose running time is not all in the ledger yet."""
    from django.db.models import F

    from apps.sessions.models import Session

    return Session.objects.filter(ready_at__isnull=False).filter(
        Q(status__in=(*Session.RUNNING, Session.Status.STOPPING))
        | Q(accounted_until__isnull=True, stopped_at__isnull=False)
        | Q(accounted_until__lt=F("stopped_at"))
    )


def account_sessions(now: datetime | None = None) -> int:
    now = now or timezone.now()
    written = 0
    for session_id in sessions_to_account().values_list("pk", flat=True):
        written += account_session(session_id, now)
    return written


def account_build(build_id: int) -> bool:
    """The build's row, once it has ended (True when written now)."""
    from apps.builds.models import Build

    build = Build.objects.filter(pk=build_id).first()
    if build is None or not build.is_terminal or not build.started_at or not build.finished_at:
        return False
    seconds = max(0.0, (build.finished_at - build.started_at).total_seconds())
    if UsageRecord.objects.filter(key=f"build:{build.pk}").exists():
        return False
    row = UsageRecord(
        key=f"build:{build.pk}",
        kind=UsageRecord.Kind.BUILD,
        period=period_of(build.finished_at).first,
        start=build.started_at,
        end=build.finished_at,
        quantity=seconds,
        user_id=build.requested_by_id,
        team_id=build.team_id,
        scope=_scope(build.team_id),
        build_id=build.pk,
    )
    return bool(UsageRecord.objects.bulk_create([row], ignore_conflicts=True))


def account_builds(since: timedelta = timedelta(days=3)) -> int:
    """Rows for ended builds that have none (a worker killed before it wrote one)."""
    from apps.builds.models import Build

    missing = (
        Build.objects.filter(finished_at__gte=timezone.now() - since, started_at__isnull=False,
                             status__in=Build.TERMINAL)
        .exclude(usage_records__kind=UsageRecord.Kind.BUILD)
        .values_list("pk", flat=True)
    )  # fmt: skip
    return sum(account_build(pk) for pk in missing)


def storage_slot(moment: datetime) -> datetime:
    seconds = max(60, int(settings.BINDERY_STORAGE_MEASURE_INTERVAL))
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=moment.tzinfo)


def record_storage(volume: object, measured_at: datetime | None = None) -> None:
    from apps.sessions.models import Volume

    assert isinstance(volume, Volume)
    moment = measured_at or volume.size_measured_at or timezone.now()
    slot = storage_slot(moment)
    row = UsageRecord(
        key=f"storage:{volume.pk}:{slot:%Y%m%d%H%M}",
        kind=UsageRecord.Kind.STORAGE,
        period=period_of(moment).first,
        start=moment,
        end=moment,
        quantity=float(volume.size_bytes),
        user_id=volume.user_id,
        team_id=volume.team_id,
        scope=_scope(volume.team_id),
        volume_id=volume.pk,
    )
    UsageRecord.objects.bulk_create([row], ignore_conflicts=True)


# --- reading ------------------------------------------------------------------------------


def _owner_filter(user_id: int | None, team_id: int | None, *, personal: bool) -> Q:
    """Rows of a user's personal use (``team_id`` None, ``personal``), of a team's whole use
    (``user_id`` None) or of one member's use within a team (both)."""
    q = Q()
    if user_id is not None:
        q &= Q(user_id=user_id)
    if team_id is not None:
        q &= Q(team_id=team_id)
    elif personal:
        q &= Q(scope=UsageRecord.Scope.PERSONAL)
    return q


def seconds_used(
    kind: str, period: Period, *, user_id: int | None, team_id: int | None,
    personal: bool = True,
) -> float:  # fmt: skip
    total = (
        UsageRecord.objects.filter(kind=kind, period=period.first)
        .filter(_owner_filter(user_id, team_id, personal=personal))
        .aggregate(total=Sum("quantity"))["total"]
    )
    return float(total or 0.0)


def _owned(sessions: QuerySet[Any], user_id: int | None, team_id: int | None,
           personal: bool) -> QuerySet[Any]:  # fmt: skip
    """Sessions of a user's personal use, a team's, or one member's within a team (as
    ``_owner_filter`` selects ledger rows)."""
    if user_id is not None:
        sessions = sessions.filter(user_id=user_id)
    if team_id is not None:
        return sessions.filter(team_id=team_id)
    return sessions.filter(team__isnull=True) if personal else sessions


def unaccounted_running_seconds(
    now: datetime, *, user_id: int | None, team_id: int | None, personal: bool = True
) -> float:
    """Running time of the owner's sessions since their cursor (what beat has not written
    yet), within this month: "left" is exact between two beats."""
    from apps.sessions.models import Session

    sessions = _owned(
        Session.objects.filter(status__in=(*Session.RUNNING, Session.Status.STOPPING),
                               ready_at__isnull=False, workshop__isnull=True),
        user_id, team_id, personal,
    )  # fmt: skip
    return sum(
        unaccounted(ready_at, cursor, now)
        for ready_at, cursor in sessions.values_list("ready_at", "accounted_until")
    )


def unaccounted(ready_at: datetime | None, cursor: datetime | None, now: datetime) -> float:
    """Seconds a running session ran this month that beat has not written yet."""
    since = max(cursor or ready_at or now, period_of(now).start)
    return max(0.0, (now - since).total_seconds())


def running_totals(
    *, user_id: int | None, team_id: int | None, personal: bool = True
) -> tuple[int, float, int]:
    """(sessions, cores, memory bytes) the owner's active sessions hold now."""
    from django.db.models import Count

    from apps.sessions.models import Session

    # a workshop's seats count as its reservation (quotas.services), not one by one
    sessions = _owned(Session.objects.filter(status__in=Session.ACTIVE, workshop__isnull=True),
                      user_id, team_id, personal)  # fmt: skip
    row = sessions.aggregate(n=Count("pk"), cpu=Sum("cpu"), memory=Sum("memory_bytes"))
    return int(row["n"] or 0), float(row["cpu"] or 0.0), int(row["memory"] or 0)


def account_all(now: datetime | None = None) -> dict[str, int]:
    """Beat's minute: sessions, then builds without a row."""
    return {"session_rows": account_sessions(now), "build_rows": account_builds()}
