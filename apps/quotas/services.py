"""Admission (may this launch or build start now, with which resources?), the usage
report ("X left"), and setting limits. The limits and their levels: ``apps.quotas.limits``;
the ledger the monthly limits count: ``apps.quotas.ledger``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from apps.accounts.models import User
from apps.quotas import ledger
from apps.quotas.limits import (
    MONTHLY,
    NAMES,
    POOL,
    UNITS,
    InvalidLimit,
    anonymous_limits,
    clean_values,
    machine_bounds,
    merged,
    person_limits,
    site_ceilings,
    site_defaults,
    team_ceiling_defaults,
    tighter,
)
from apps.quotas.models import Quota, UsageRecord
from apps.teams.models import Membership, Team
from apps.teams.services import require_manager
from portal.errors import BinderyError, InvalidInput, NotFound, PermissionDenied
from portal.utils import advisory_xact_lock


class QuotaExceeded(BinderyError):
    status = 429
    code = "QUOTA_EXCEEDED"


class BuildQuotaExceeded(QuotaExceeded):
    code = "BUILD_QUOTA_EXCEEDED"


class StorageQuotaExceeded(QuotaExceeded):
    code = "STORAGE_QUOTA_EXCEEDED"


class QuotaAboveCeiling(InvalidInput):
    code = "QUOTA_ABOVE_CEILING"


# --- who is counted -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """Whose use a pool limit counts, with its bounds (complete: every name)."""

    kind: str  # "user" (personal use), "team" (every member's team use), "member", "anonymous"
    bounds: Mapping[str, float | int | None]
    levels: Mapping[str, str]  # name → which level set the bound ("site", "team", …)
    user_id: int | None = None
    team_id: int | None = None
    anonymous_owner: str = ""
    team_name: str = ""


def _values(scope: str, **owner: Any) -> dict[str, float | int | None]:
    quota = Quota.objects.filter(scope=scope, **owner).only("values").first()
    return dict(quota.values) if quota is not None else {}


def _layered(
    layers: Sequence[tuple[str, Mapping[str, float | int | None]]],
) -> tuple[dict[str, float | int | None], dict[str, str]]:
    bounds: dict[str, float | int | None] = {}
    levels: dict[str, str] = {}
    for name in NAMES:
        best: float | int | None = None
        level = layers[-1][0]
        for layer, values in layers:
            value = values.get(name)
            # on a tie the later (narrower) level is named: the admin's pool, not the ceiling
            if value is not None and (best is None or value <= best):
                best, level = value, layer
        bounds[name], levels[name] = best, level
    return bounds, levels


def _team_layers(team: Team) -> list[tuple[str, Mapping[str, float | int | None]]]:
    """The site's ceilings, the team's ceiling (staff's, else the default: what one person
    has) and the team's pool over its defaults."""
    ceiling = team_ceiling_defaults()
    ceiling.update(_values("ceiling", team=team))
    return [
        ("site", site_ceilings()),
        ("team ceiling", ceiling),
        ("team", merged("team", _values("team", team=team))),
    ]


def _person_pool(user: User) -> Pool:
    bounds, levels = _layered([("site", site_ceilings()), ("person", person_limits())])
    return Pool("person", bounds, levels, user_id=user.pk)


def pools_for(
    user: User | None, team: Team | None = None, *, anonymous_owner: str = ""
) -> list[Pool]:
    """The pools a launch counts against: the user's own (personal), or the team's pool
    and the member's cap within it (team), or the visitor's (anonymous); for a signed-in
    user last the person's (everything they run, personal and team together)."""
    if user is None:
        bounds, levels = _layered([("site", site_ceilings()), ("anonymous", anonymous_limits())])
        return [Pool("anonymous", bounds, levels, anonymous_owner=anonymous_owner)]
    if team is None:
        bounds, levels = _layered(
            [("site", site_ceilings()), ("user", merged("user", _values("user", user=user)))]
        )
        return [Pool("user", bounds, levels, user_id=user.pk), _person_pool(user)]
    membership = Membership.objects.filter(team=team, user=user).first()
    team_layers = _team_layers(team)
    team_bounds, team_levels = _layered(team_layers)
    member_values = _values("member", membership=membership) if membership else {}
    member_bounds, member_levels = _layered(
        [*team_layers, ("member", merged("member", member_values))]
    )
    return [
        Pool("team", team_bounds, team_levels, team_id=team.pk, team_name=team.name),
        Pool("member", member_bounds, member_levels, user_id=user.pk, team_id=team.pk,
             team_name=team.name),
        _person_pool(user),
    ]  # fmt: skip


# --- counting -------------------------------------------------------------------------------


def _count_scope(pool: Pool) -> dict[str, Any]:
    """Whose rows a pool counts: a user's personal ones, a team's, a member's within a
    team, or (the person) all of one user's."""
    personal = pool.kind == "user"
    return {"user_id": pool.user_id, "team_id": pool.team_id, "personal": personal}


def used_in(pool: Pool, name: str, now: datetime) -> float | int:
    """What ``pool`` uses of a pool limit now (sessions, builds) or this month (hours,
    minutes), in the limit's unit."""
    from apps.builds.models import Build
    from apps.sessions.models import Session

    scope = _count_scope(pool)
    if name == "sessions":
        if pool.kind == "anonymous":
            return Session.objects.filter(user=None, anonymous_owner=pool.anonymous_owner,
                                          status__in=Session.ACTIVE).count()  # fmt: skip
        return ledger.running_totals(**scope)[0] + workshop_reservations(pool, now)
    if name == "builds":
        builds = Build.objects.filter(status__in=Build.ACTIVE)
        if pool.user_id is not None:
            builds = builds.filter(requested_by_id=pool.user_id)
        if pool.team_id is not None:
            builds = builds.filter(team_id=pool.team_id)
        elif pool.kind == "user":
            builds = builds.filter(team__isnull=True)
        elif pool.kind == "anonymous":
            return 0
        return builds.count()
    period = ledger.period_of(now)
    if name == "session_hours":
        if pool.kind == "anonymous":
            return 0
        seconds = ledger.seconds_used(UsageRecord.Kind.SESSION, period, **scope)
        seconds += ledger.unaccounted_running_seconds(now, **scope)
        return round(seconds / 3600, 4)
    if name == "build_minutes":
        if pool.kind == "anonymous":
            return 0
        return round(ledger.seconds_used(UsageRecord.Kind.BUILD, period, **scope) / 60, 4)
    raise ValueError(name)


def _left(allowed: float | int | None, used: float | int) -> float | int | None:
    if allowed is None:
        return None
    left = allowed - used
    return max(0, round(left, 4) if isinstance(left, float) else left)


def resets_at(name: str, now: datetime) -> str | None:
    return ledger.period_of(now).end.isoformat() if name in MONTHLY else None


def _number(name: str, value: float | int | None) -> str:
    if value is None:
        return "unlimited"
    if name in ("memory", "storage"):
        return filesizeformat(value).replace("\xa0", " ")
    if name == "session_hours":
        return f"{value:g} hour{'s' if value != 1 else ''}"
    if name == "build_minutes":
        return f"{value:g} build minute{'s' if value != 1 else ''}"
    if name == "cpu":
        return f"{value:g} CPU" + ("s" if value != 1 else "")
    return f"{value:g}"


def _whose(pool: Pool, name: str) -> str:
    """Whose limit it is, for a sentence: "your limit", "Ocean Lab's limit", "the site's
    limit"."""
    level = pool.levels.get(name, "")
    if pool.kind == "person":
        return "the most one person may run, personal and team together"
    if level == "site":
        return "the site's limit"
    if pool.kind == "team":
        return f"{pool.team_name}'s limit" + (" (set by staff)" if level == "team ceiling" else "")
    if pool.kind == "member":
        if level == "member":
            return f"your limit in {pool.team_name}"
        return f"{pool.team_name}'s limit" + (" (set by staff)" if level == "team ceiling" else "")
    return "your limit"


def _subject(pool: Pool) -> tuple[str, str]:
    """(who, verb suffix) for sentences: ("You", "") or ("Ocean Lab", "s")."""
    if pool.kind == "team":
        return pool.team_name, "s"
    return "You", ""


def _refuse_pool(pool: Pool, name: str, used: float | int, allowed: float | int,
                 now: datetime, error: type[QuotaExceeded]) -> QuotaExceeded:  # fmt: skip
    who, s = _subject(pool)
    whose = _whose(pool, name)
    where = f" for {pool.team_name}" if pool.kind == "member" else ""
    period = ledger.period_of(now)
    renew = f"{period.end:%-d %B %Y}"
    if name == "sessions":
        other = ("Ask a member to stop one, or a team admin to raise the limit."
                 if pool.kind == "team" else "Stop one before starting another.")  # fmt: skip
        sentence = (f"{who} already run{s} {used:g} session{'s' if used != 1 else ''}{where} "
                    f"({whose} is {allowed:g}). {other}")  # fmt: skip
    elif name == "builds":
        sentence = (f"{who} already run{s} {used:g} build{'s' if used != 1 else ''}{where} "
                    f"({whose} is {allowed:g} at once): wait for one to finish.")  # fmt: skip
    else:
        has = "have" if who == "You" else "has"
        unit = "session hours" if name == "session_hours" else "build minutes"
        sentence = (f"{who} {has} used {used:g} of {allowed:g} {unit}{where} for "
                    f"{period.name} ({whose}); they renew on {renew}.")  # fmt: skip
    return error(
        sentence, limit=name, used=used, allowed=allowed, left=_left(allowed, used),
        resets_at=resets_at(name, now),
    )  # fmt: skip


# --- workshops' reservations ---------------------------------------------------------------


def _workshops_of(pool: Pool) -> Any:
    from apps.workshops.models import Workshop

    if pool.kind == "user":
        return Workshop.objects.filter(owner_id=pool.user_id or 0, team__isnull=True)
    if pool.kind == "team":
        return Workshop.objects.filter(team_id=pool.team_id or 0)
    return Workshop.objects.none()


def workshop_reservations(pool: Pool, now: datetime) -> int:
    """Seats the pool's workshops hold now: from the warm lead before opening to closing,
    every seat counts as a session at once, taken or not (its attendees' sessions are not
    counted one by one)."""
    from datetime import timedelta

    lead = timedelta(seconds=settings.BINDERY_WORKSHOP_WARM_LEAD)
    held = _workshops_of(pool).filter(closed_at__isnull=True, closes_at__gt=now,
                                      opens_at__lte=now + lead)  # fmt: skip
    return sum(held.values_list("seats", flat=True))


def reserve_for_workshop(
    actor: User, team: Team | None, *, seats: int, cpu: float | None,
    memory_bytes: int | None, session_minutes: int, opens_at: datetime, closes_at: datetime,
    exclude_id: int | None = None,
) -> None:  # fmt: skip
    """May the instructor's (or the team's) quota hold a workshop of ``seats`` for this
    window? Its seats count as sessions at once against the pool, with every other workshop
    of the pool whose window overlaps; each seat's CPU and memory are within one session's
    bound; seats times session length fits in the month's session hours left. Raises
    QuotaExceeded naming the limit."""
    now = timezone.now()
    pools = pools_for(actor, team)
    pool = pools[0]
    allowed = pool.bounds.get("sessions")
    if allowed is not None:
        others = _workshops_of(pool).filter(closed_at__isnull=True, opens_at__lt=closes_at,
                                            closes_at__gt=opens_at)  # fmt: skip
        if exclude_id is not None:
            others = others.exclude(pk=exclude_id)
        held = sum(others.values_list("seats", flat=True))
        own = ledger.running_totals(**_count_scope(pool))[0]
        if held + seats + own > allowed:
            _who, _ = _subject(pool)
            raise QuotaExceeded(
                f"{seats} seats do not fit: {_whose(pool, 'sessions')} is {allowed:g} sessions "
                f"at once, and {held + own:g} are held then by running sessions and other "
                "workshops. Ask for a larger quota, or choose fewer seats.",
                limit="sessions", used=held + own, allowed=allowed,
                left=max(0, allowed - held - own), resets_at=None,
            )  # fmt: skip
    _size(pools, cpu, memory_bytes)
    hours = pool.bounds.get("session_hours")
    if hours is not None:
        used = float(used_in(pool, "session_hours", now))
        need = seats * session_minutes / 60
        if used + need > hours:
            raise QuotaExceeded(
                f"{seats} seats of {session_minutes} minutes need {need:g} session hours; "
                f"{_left(hours, used):g} of {hours:g} are left this month "
                f"({_whose(pool, 'session_hours')}).",
                limit="session_hours", used=used, allowed=hours, left=_left(hours, used),
                resets_at=resets_at("session_hours", now),
            )  # fmt: skip


# --- admission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    memory_bytes: int
    max_processes: int
    cpu: float | None = None
    # What each volume the session mounts may hold (volume id → bytes or None).
    storage: Mapping[int, int | None] = field(default_factory=dict)


def per_session(pools: Iterable[Pool], name: str) -> float | int | None:
    bound: float | int | None = None
    for pool in pools:
        bound = tighter(bound, pool.bounds.get(name))
    return bound


def _check_sessions(pools: list[Pool], now: datetime) -> None:
    for pool in pools:
        for name in ("sessions", "session_hours"):
            allowed = pool.bounds.get(name)
            if allowed is None:
                continue
            used = used_in(pool, name, now)
            if used >= allowed:
                raise _refuse_pool(pool, name, used, allowed, now, QuotaExceeded)


def _size(
    pools: list[Pool], cpu: float | None, memory_bytes: int | None
) -> tuple[int, float | None]:
    """The session's memory and CPU: what it asked for, within the tightest bound; the
    bound itself when it asked for nothing."""
    machine = machine_bounds()
    for name, asked in (("memory", memory_bytes), ("cpu", cpu)):
        allowed = per_session(pools, name)
        whose = ""
        if allowed is not None:
            pool = next(p for p in pools if p.bounds.get(name) == allowed)
            whose = _whose(pool, name)
        if tighter(allowed, machine[name]) != allowed:
            allowed, whose = machine[name], "what this installation's machines have"
        if asked is not None and allowed is not None and asked > allowed:
            raise QuotaExceeded(
                f"This launch asks for {_number(name, asked)}; the most one session may have "
                f"is {_number(name, allowed)} ({whose}).",
                limit=name, used=asked, allowed=allowed, left=allowed, resets_at=None,
            )  # fmt: skip
    memory_allowed = per_session(pools, "memory")
    memory = memory_bytes if memory_bytes is not None else memory_allowed
    if memory is None:
        memory = int(site_defaults("user")["memory"] or 2 * 1024**3)
    cpu_allowed = per_session(pools, "cpu")
    return int(memory), cpu if cpu is not None else cpu_allowed


def _volumes_for(user: User | None, team: Team | None) -> list[Any]:
    """The volumes a launch mounts that exist already (a new one holds nothing)."""
    from apps.sessions.models import Volume

    found = []
    if user is not None:
        found += list(Volume.objects.filter(user=user))
    if team is not None:
        found += list(Volume.objects.filter(team=team).select_related("team"))
    return found


def storage_limit_of(volume: Any) -> tuple[int | None, Pool]:
    """What one volume may hold: a home volume its owner's personal limit, a team's volume
    the team's pool limit."""
    pool = pools_for(volume.user)[0] if volume.user_id else _team_pool(volume.team)
    allowed = pool.bounds.get("storage")
    return (None if allowed is None else int(allowed)), pool


def _check_storage(user: User | None, team: Team | None) -> dict[int, int | None]:
    """Each mounted volume's limit; refuses a volume measured over it. Only where a
    volume's size is the bytes its files use (local): a claim's size is its capacity, which
    the claim itself bounds (kubernetes requests the limit as the claim's size)."""
    from apps.sessions.services import volume_offer

    limits: dict[int, int | None] = {}
    measured = volume_offer().size_kind == "used"
    for volume in _volumes_for(user, team):
        allowed, pool = storage_limit_of(volume)
        limits[volume.pk] = allowed
        size = int(volume.size_bytes)
        if measured and allowed is not None and size > allowed:
            what = "Your home volume" if volume.user_id else f"{volume.team}'s volume"
            raise StorageQuotaExceeded(
                f"{what} holds {_number('storage', size)}, over its "
                f"{_number('storage', allowed)} limit ({_whose(pool, 'storage')}). Launches "
                "that mount it are refused until it is under; nothing was deleted. Download "
                "what you want to keep from the Volumes page and delete the volume there, "
                "or ask for a larger limit.",
                limit="storage", used=size, allowed=allowed, left=0, resets_at=None,
            )  # fmt: skip
    return limits


def _lock(user: User | None, team: Team | None, anonymous_owner: str = "") -> None:
    """Serialise admissions that count the same pool: the team's row, then the user's
    (always in that order, so two launches never wait for each other in a circle); a
    visitor without an account has no row, so PostgreSQL locks their key instead (SQLite
    serialises every writer anyway)."""
    if team is not None:
        Team.objects.select_for_update().filter(pk=team.pk).first()
    if user is not None:
        User.objects.select_for_update().filter(pk=user.pk).first()
    elif anonymous_owner:
        advisory_xact_lock(f"bindery-anonymous:{anonymous_owner}")


def admit(
    user: User | None,
    team: Team | None = None,
    *,
    anonymous_owner: str = "",
    cpu: float | None = None,
    memory_bytes: int | None = None,
    now: datetime | None = None,
) -> Admission:
    """Refuse with QuotaExceeded (429: which limit, used, allowed, left, resets_at) before
    any work starts, or StorageQuotaExceeded for a mounted volume over its limit; else the
    session's size.

    Call inside the transaction that creates the session: the team's and the user's rows
    are locked, so two launches at once cannot both take the last place.
    """
    assert transaction.get_connection().in_atomic_block, "admit() needs a transaction"
    now = now or timezone.now()
    _lock(user, team, anonymous_owner)
    pools = pools_for(user, team, anonymous_owner=anonymous_owner)
    _check_sessions(pools, now)
    memory, session_cpu = _size(pools, cpu, memory_bytes)
    storage = _check_storage(user, team)
    return Admission(memory_bytes=memory, max_processes=settings.BINDERY_SESSION_PROCESSES,
                     cpu=session_cpu, storage=storage)  # fmt: skip


def admit_build(user: User | None, team: Team | None = None, now: datetime | None = None) -> None:
    """May ``user`` start one more build now (for ``team``'s launch, or their own)? Raises
    BuildQuotaExceeded (429) past builds-at-once or this month's build minutes; locks the
    rows, so two requests at once cannot both pass. Anonymous builds are bounded by session
    admission."""
    if user is None or not user.is_authenticated:
        return
    now = now or timezone.now()
    _lock(user, team)
    for pool in pools_for(user, team):
        for name in ("builds", "build_minutes"):
            allowed = pool.bounds.get(name)
            if allowed is None:
                continue
            used = used_in(pool, name, now)
            if used >= allowed:
                raise _refuse_pool(pool, name, used, allowed, now, BuildQuotaExceeded)


def preview(
    user: User | None, team: Team | None = None, *, anonymous_owner: str = "",
    cpu: float | None = None, memory_bytes: int | None = None,
) -> tuple[Admission | None, QuotaExceeded | None, list[LimitUsage]]:  # fmt: skip
    """What a launch would get, or the refusal it would meet (the same sentence), and what
    is left: for the launch form and the ``/v2/`` page. Reads only, locks nothing."""
    now = timezone.now()
    pools = pools_for(user, team, anonymous_owner=anonymous_owner)
    report = _report(pools, now, current=True)
    try:
        _check_sessions(pools, now)
        memory, session_cpu = _size(pools, cpu, memory_bytes)
        storage = _check_storage(user, team)
    except QuotaExceeded as exc:
        return None, exc, report
    admission = Admission(memory, settings.BINDERY_SESSION_PROCESSES, session_cpu, storage)
    return admission, None, report


# --- the usage report -----------------------------------------------------------------------


@dataclass(frozen=True)
class LimitUsage:
    name: str
    unit: str
    used: float | int | None
    allowed: float | int | None
    left: float | int | None
    resets_at: str | None = None
    per: str = ""  # "session", "volume" for the per-session/per-volume ones; "" for pools

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "unit": self.unit, "used": self.used,
                                "allowed": self.allowed, "left": self.left}  # fmt: skip
        if self.resets_at:
            body["resets_at"] = self.resets_at
        if self.per:
            body["per"] = self.per
        return body

    @property
    def fraction(self) -> float | None:
        if self.allowed in (None, 0) or self.used is None:
            return None if self.allowed is None else 1.0
        return min(1.0, float(self.used) / float(self.allowed))


def _storage_used(pool: Pool, period: ledger.Period, current: bool) -> int | None:
    from apps.sessions.models import Volume

    if pool.kind == "anonymous":
        return None
    if current:
        if pool.kind == "team":
            volume = Volume.objects.filter(team_id=pool.team_id or 0).first()
        elif pool.kind == "user":
            volume = Volume.objects.filter(user_id=pool.user_id or 0).first()
        else:
            return None  # a member's storage is their home volume: see their own usage
        return int(volume.size_bytes) if volume is not None else 0
    from django.db.models import Max

    rows = UsageRecord.objects.filter(kind=UsageRecord.Kind.STORAGE, period=period.first)
    if pool.kind == "team":
        rows = rows.filter(team_id=pool.team_id or 0)
    else:
        rows = rows.filter(user_id=pool.user_id or 0, scope=UsageRecord.Scope.PERSONAL)
    peak = rows.aggregate(peak=Max("quantity"))["peak"]
    return int(peak) if peak is not None else 0


def _report(pools: list[Pool], now: datetime, *, current: bool,
            period: ledger.Period | None = None,
            counts: Mapping[str, float | int] | None = None) -> list[LimitUsage]:  # fmt: skip
    """Each limit: what is used and left, the tightest pool deciding. ``counts`` gives the
    (single) pool's use when the caller counted many pools at once (``member_usage``)."""
    period = period or ledger.period_of(now)
    out: list[LimitUsage] = []
    for name in NAMES:
        if name in POOL:
            best: LimitUsage | None = None
            for pool in pools:
                allowed = pool.bounds.get(name)
                if counts is not None:
                    used = counts.get(name, 0) if (current or name in MONTHLY) else None
                elif name in MONTHLY:
                    used = _used_in_period(pool, name, period, now, current)
                elif current:
                    used = used_in(pool, name, now)
                else:
                    used = None
                left = _left(allowed, used) if used is not None else None
                row = LimitUsage(name, UNITS[name], used, allowed, left,
                                 resets_at(name, now) if current else None)  # fmt: skip
                if best is None or (
                    row.left is not None and (best.left is None or row.left < best.left)
                ):
                    best = row  # fmt: skip
            assert best is not None
            out.append(best)
        elif name == "storage":
            allowed = per_session(pools, name) if pools[0].kind != "member" else (
                pools[0].bounds.get(name))  # fmt: skip
            used = _storage_used(pools[0], period, current)
            left = _left(allowed, used) if used is not None else None
            out.append(LimitUsage(name, UNITS[name], used, allowed, left, per="volume"))
        else:
            allowed = per_session(pools, name)
            if not current:
                used = None
            elif counts is not None:
                used = counts.get(name, 0)
            else:
                used = _running(pools, name)
            out.append(LimitUsage(name, UNITS[name], used, allowed, allowed, per="session"))
    return out


def _running(pools: list[Pool], name: str) -> float | int:
    """Cores or bytes the narrowest pool's active sessions hold now (not the person's)."""
    pool = [p for p in pools if p.kind != "person"][-1]
    if pool.kind == "anonymous":
        return 0
    _, cores, memory = ledger.running_totals(**_count_scope(pool))
    return round(cores, 4) if name == "cpu" else memory


def _used_in_period(pool: Pool, name: str, period: ledger.Period, now: datetime,
                    current: bool) -> float:  # fmt: skip
    if current:
        return float(used_in(pool, name, now))
    kind = UsageRecord.Kind.SESSION if name == "session_hours" else UsageRecord.Kind.BUILD
    seconds = ledger.seconds_used(kind, period, **_count_scope(pool))
    return round(seconds / (3600 if name == "session_hours" else 60), 4)


@dataclass(frozen=True)
class UsageReport:
    period: ledger.Period
    limits: list[LimitUsage]

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": {
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "label": self.period.label,
            },
            "limits": [limit.as_dict() for limit in self.limits],
        }

    def get(self, name: str) -> LimitUsage:
        return next(limit for limit in self.limits if limit.name == name)


def _period_arg(period: ledger.Period | None, now: datetime) -> tuple[ledger.Period, bool]:
    current = ledger.period_of(now)
    period = period or current
    return period, period == current


def usage_for(
    user: User, team: Team | None = None, period: ledger.Period | None = None
) -> UsageReport:
    """The user's own use and limits (personal launches), or within ``team`` (the team's
    pool and their cap in it, the tighter deciding each "left")."""
    now = timezone.now()
    period, current = _period_arg(period, now)
    return UsageReport(period, _report(pools_for(user, team), now, current=current,
                                       period=period))  # fmt: skip


def team_usage(team: Team, period: ledger.Period | None = None) -> UsageReport:
    """The team's totals against its pool."""
    now = timezone.now()
    period, current = _period_arg(period, now)
    pool = _team_pool(team)
    return UsageReport(period, _report([pool], now, current=current, period=period))


def _team_pool(team: Team) -> Pool:
    bounds, levels = _layered(_team_layers(team))
    return Pool("team", bounds, levels, team_id=team.pk, team_name=team.name)


def member_usage(
    team: Team, period: ledger.Period | None = None
) -> list[tuple[Membership, UsageReport]]:
    """Each member's use within the team, against their cap (admins' view). Counted for
    the whole team at once: the queries do not grow with the team."""
    now = timezone.now()
    period, current = _period_arg(period, now)
    memberships = list(Membership.objects.filter(team=team).select_related("user"))
    caps = {q.membership_id: q.values
            for q in Quota.objects.filter(scope="member", membership__in=memberships)}  # fmt: skip
    counts = _member_counts(team, period, now, current)
    team_layers = _team_layers(team)
    rows = []
    for membership in memberships:
        bounds, levels = _layered(
            [*team_layers, ("member", merged("member", caps.get(membership.pk, {})))]
        )
        pool = Pool("member", bounds, levels, user_id=membership.user_id, team_id=team.pk,
                    team_name=team.name)  # fmt: skip
        report = _report([pool], now, current=current, period=period,
                         counts=counts.get(membership.user_id, {}))  # fmt: skip
        rows.append((membership, UsageReport(period, report)))
    return rows


def _member_counts(team: Team, period: ledger.Period, now: datetime,
                   current: bool) -> dict[int, dict[str, float | int]]:  # fmt: skip
    """Per member (user id): sessions, builds, cores and memory now; session hours and
    build minutes in ``period`` — a handful of grouped queries for the whole team."""
    from django.db.models import Count, Sum

    from apps.builds.models import Build
    from apps.sessions.models import Session

    out: dict[int, dict[str, float | int]] = {}

    def add(user_id: int | None, name: str, value: float | int) -> None:
        if user_id is not None:
            out.setdefault(user_id, {})
            out[user_id][name] = out[user_id].get(name, 0) + value

    for kind, name, unit in ((UsageRecord.Kind.SESSION, "session_hours", 3600),
                             (UsageRecord.Kind.BUILD, "build_minutes", 60)):  # fmt: skip
        for user_id, total in (
            UsageRecord.objects.filter(kind=kind, period=period.first, team=team)
            .values_list("user_id").annotate(total=Sum("quantity"))
        ):  # fmt: skip
            add(user_id, name, round((total or 0) / unit, 4))
    if not current:
        return out
    active = Session.objects.filter(team=team, status__in=Session.ACTIVE)
    for user_id, n, cores, memory in active.values_list("user_id").annotate(
        n=Count("pk"), cores=Sum("cpu"), memory=Sum("memory_bytes")
    ):
        add(user_id, "sessions", n)
        add(user_id, "cpu", round(cores or 0.0, 4))
        add(user_id, "memory", int(memory or 0))
    running = active.filter(status__in=(*Session.RUNNING, Session.Status.STOPPING),
                            ready_at__isnull=False)  # fmt: skip
    for user_id, ready_at, cursor in running.values_list("user_id", "ready_at", "accounted_until"):
        add(user_id, "session_hours", round(ledger.unaccounted(ready_at, cursor, now) / 3600, 4))
    builds = Build.objects.filter(team=team, status__in=Build.ACTIVE)
    for user_id, n in builds.values_list("requested_by_id").annotate(n=Count("pk")):
        add(user_id, "builds", n)
    return out


# --- setting limits -------------------------------------------------------------------------


def _clean(values: Mapping[str, Any]) -> dict[str, float | int | None]:
    try:
        return clean_values(values)
    except InvalidLimit as exc:
        raise InvalidInput(str(exc), code="QUOTA_INVALID", limit=exc.name) from exc


def _within(values: Mapping[str, float | int | None],
            ceiling: Mapping[str, float | int | None], whose: str) -> None:  # fmt: skip
    machine = machine_bounds()
    for name, value in values.items():
        allowed = ceiling.get(name)
        if value is not None and name in machine and tighter(value, machine[name]) != value:
            allowed, whose = machine[name], "this installation's machines have"
        if allowed is None:
            continue
        if value is None or value > allowed:
            raise QuotaAboveCeiling(
                f"{name} cannot be {_number(name, value)}: {whose} at most "
                f"{_number(name, allowed)}.",
                limit=name, allowed=allowed,
            )  # fmt: skip


def _save(scope: str, values: Mapping[str, float | int | None], actor: User,
          **owner: Any) -> Quota:  # fmt: skip
    quota, _ = Quota.objects.select_for_update().get_or_create(scope=scope, **owner)
    quota.values = {**quota.values, **values}
    quota.updated_at, quota.updated_by = timezone.now(), actor
    quota.save(update_fields=["values", "updated_at", "updated_by"])
    return quota


def _require_staff(actor: User) -> None:
    if not actor.is_staff:
        raise PermissionDenied("Only staff can set this.")


def _require_manager(actor: Membership) -> None:
    require_manager(actor, "set the team's limits", staff=True)


@transaction.atomic
def set_user_quota(actor: User, user: User, values: Mapping[str, Any]) -> dict[str, Any]:
    _require_staff(actor)
    cleaned = _clean(values)
    _within(cleaned, site_ceilings(), "the site allows")
    _save("user", cleaned, actor, user=user)
    return effective(pools_for(user)[0])


@transaction.atomic
def set_team_ceiling(actor: User, team: Team, values: Mapping[str, Any]) -> dict[str, Any]:
    _require_staff(actor)
    cleaned = _clean(values)
    _within(cleaned, site_ceilings(), "the site allows")
    _save("ceiling", cleaned, actor, team=team)
    return team_ceiling(team)


@transaction.atomic
def set_team_quota(actor: Membership, values: Mapping[str, Any]) -> dict[str, Any]:
    """The team's pool, set by its admins within what the site and staff allow it."""
    _require_manager(actor)
    cleaned = _clean(values)
    team = actor.team
    staff_set = bool(_values("ceiling", team=team))
    _within(cleaned, team_ceiling(team),
            "staff allow the team" if staff_set else "the site allows a team")  # fmt: skip
    _save("team", cleaned, actor.user, team=team)
    return effective(_team_pool(team))


@transaction.atomic
def set_member_quota(
    actor: Membership, membership: Membership, values: Mapping[str, Any]
) -> dict[str, Any]:
    """A member's cap within the team, never above the team's own bounds."""
    _require_manager(actor)
    if membership.team_id != actor.team_id:
        raise NotFound("No such member.")
    if membership.rank > actor.rank and not actor.user.is_staff:
        raise PermissionDenied("Only an owner can set an owner's cap.")
    cleaned = _clean(values)
    if "storage" in cleaned:
        raise InvalidInput("storage bounds a volume, not a member: set it on the team.",
                           code="QUOTA_INVALID", limit="storage")  # fmt: skip
    _within(cleaned, _team_pool(actor.team).bounds, "the team's pool allows")
    _save("member", cleaned, actor.user, membership=membership)
    return effective(pools_for(membership.user, actor.team)[1])


def effective(pool: Pool) -> dict[str, Any]:
    """The limits that bind, by name (None = unlimited)."""
    return {name: pool.bounds.get(name) for name in NAMES}


def team_quota(team: Team) -> dict[str, Any]:
    return effective(_team_pool(team))


def member_quota(membership: Membership) -> dict[str, Any]:
    return effective(pools_for(membership.user, membership.team)[1])


def user_quota(user: User) -> dict[str, Any]:
    return effective(pools_for(user)[0])


def team_ceiling(team: Team) -> dict[str, Any]:
    """The most the team's admins may set: the site's ceilings and the team's own."""
    ceiling: dict[str, float | int | None] = {}
    for _, values in _team_layers(team)[:2]:
        for name in NAMES:
            ceiling[name] = tighter(ceiling.get(name), values.get(name))
    return {name: ceiling.get(name) for name in NAMES}


# --- the month running out ------------------------------------------------------------------


def enforce_session_hours(now: datetime | None = None) -> dict[str, list[int]]:
    """Warn running sessions whose pool's session hours run out within
    ``BINDERY_QUOTA_WARN_MINUTES`` (an event on their stream, once; the dashboard shows
    it), and stop those whose hours are used up. Their volumes are untouched."""
    from apps.sessions.events import add_event
    from apps.sessions.models import Session
    from apps.sessions.services import SessionNotStoppable, request_stop

    now = now or timezone.now()
    report: dict[str, list[int]] = {"warned": [], "stopped": []}
    running = list(
        Session.objects.filter(status=Session.Status.READY, user__isnull=False,
                               workshop__isnull=True)  # a workshop's seats: its reservation
        .select_related("user", "team")
    )  # fmt: skip
    left_of: dict[tuple[str, int | None, int | None], tuple[float, int, Pool]] = {}
    for session in running:
        for pool in pools_for(session.user, session.team):
            allowed = pool.bounds.get("session_hours")
            if allowed is None:
                continue
            key = (pool.kind, pool.user_id, pool.team_id)
            if key not in left_of:
                n = sum(1 for s in running if _in_pool(s, pool))
                used = float(used_in(pool, "session_hours", now))
                left_of[key] = ((float(allowed) - used) * 3600, max(1, n), pool)
            left_seconds, n, pool = left_of[key]
            wall = left_seconds / n  # every running session of the pool spends it
            whose = _whose(pool, "session_hours")
            if left_seconds <= 0:
                with contextlib.suppress(SessionNotStoppable):
                    request_stop(
                        session,
                        f"This month's session hours are used up ({whose}); the session was "
                        "stopped. Files in persistent/ are kept.",
                    )
                report["stopped"].append(session.pk)
                break
            if wall <= settings.BINDERY_QUOTA_WARN_MINUTES * 60 and session.quota_warned_at is None:
                minutes = max(1, int(wall // 60))
                updated = Session.objects.filter(pk=session.pk, quota_warned_at__isnull=True
                                                 ).update(quota_warned_at=now)  # fmt: skip
                if updated:
                    add_event(session, "quota",
                              f"About {minutes} minute{'s' if minutes != 1 else ''} of session "
                              f"hours left this month ({whose}): the session stops when they "
                              "run out. Save your work to persistent/.")  # fmt: skip
                    report["warned"].append(session.pk)
                    session.quota_warned_at = now
    return report


def _in_pool(session: Any, pool: Pool) -> bool:
    if pool.kind == "user":
        return session.user_id == pool.user_id and session.team_id is None
    if pool.kind == "team":
        return session.team_id == pool.team_id
    return session.user_id == pool.user_id and session.team_id == pool.team_id
