"""Every change to workshops: create (pinned and pre-built), update, rotate the code,
close; join (a seat taken atomically, a warm server handed over or a cold one started);
and beat's tending (warm pool, session lengths, the closing warning, closing, guest
retention). How a warm server becomes an attendee's: docs/architecture.md "workshops".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import User
from apps.builds.backends.disk import parse_size
from apps.builds.models import Build
from apps.builds.services import request_build, resolve_input
from apps.sessions import services as sessions
from apps.sessions.events import add_event
from apps.sessions.models import Session
from apps.teams.models import Team
from apps.teams.selectors import get_membership_for_user
from apps.workshops.models import CODE_ALPHABET, CODE_LENGTH, Seat, Workshop
from portal.errors import (
    BinderyError,
    Conflict,
    NotFound,
    PermissionDenied,
    invalid_field,
)
from portal.utils import advisory_xact_lock

log = logging.getLogger(__name__)

MAX_SEATS = 1000


class WorkshopNotFound(NotFound):
    code = "WORKSHOP_NOT_FOUND"
    default_message = "No workshop has this code. Check it with your instructor."


class WorkshopFull(Conflict):
    code = "WORKSHOP_FULL"


class WorkshopNotOpen(Conflict):
    code = "WORKSHOP_NOT_OPEN"


class WorkshopClosed(BinderyError):
    status = 410
    code = "WORKSHOP_CLOSED"


class JoinNotAllowed(PermissionDenied):
    code = "WORKSHOP_NOT_ALLOWED"


class SignInRequired(BinderyError):
    status = 401
    code = "WORKSHOP_SIGN_IN_REQUIRED"
    default_message = "Sign in to join this workshop: it has no guest seats."


# --- codes ----------------------------------------------------------------------------------


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str:
    """What a person typed, as a code: case, spaces and dashes do not matter."""
    return "".join(c for c in text.upper() if c not in " -\t")[:16]


def guest_digest(guest_owner: str) -> str:
    return hashlib.sha256(f"workshop-guest:{guest_owner}".encode()).hexdigest()


# --- creating -------------------------------------------------------------------------------


def may_create(user: User, team: Team | None = None) -> bool:
    if team is not None:
        try:
            return get_membership_for_user(user, team.slug).can_manage
        except NotFound:
            return False
    return user.is_staff or settings.BINDERY_WORKSHOP_CREATORS == "any"


def _zone(name: str) -> str:
    try:
        ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid_field("time_zone", f"Unknown time zone {name!r}.") from None
    return name or "UTC"


def _check_window(opens_at: datetime, closes_at: datetime, *, creating: bool) -> None:
    if timezone.is_naive(opens_at) or timezone.is_naive(closes_at):
        raise invalid_field("opens_at", "Give times with their time zone (ISO 8601).")
    if closes_at <= opens_at:
        raise invalid_field("closes_at", "The workshop must close after it opens.")
    if creating and closes_at <= timezone.now():
        raise invalid_field("closes_at", "That closing time has passed.")
    if closes_at - opens_at > timedelta(days=31):
        raise invalid_field("closes_at", "A workshop may last at most 31 days.")


def _check_seats(seats: Any, taken: int = 0) -> int:
    if isinstance(seats, bool) or not isinstance(seats, int) or not 1 <= seats <= MAX_SEATS:
        raise invalid_field("seats", f"Seats must be a whole number from 1 to {MAX_SEATS}.")
    if seats < taken:
        raise invalid_field("seats", f"{taken} seats are taken: the workshop cannot have fewer.")
    return seats


def _check_minutes(minutes: Any) -> int:
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 24 * 60:
        raise invalid_field("session_minutes", "A session lasts 5 minutes to 24 hours.")
    return minutes


def _check_domains(text: str) -> str:
    domains = [d.strip().lower().lstrip("@") for d in (text or "").split(",") if d.strip()]
    for domain in domains:
        if (
            not all(part.isalnum() or "-" in part for part in domain.split("."))
            or "." not in domain
        ):
            raise invalid_field("email_domains", f"{domain!r} is not a domain such as uni.edu.")
    return ", ".join(domains)[:500]


@transaction.atomic
def create_workshop(
    actor: User,
    *,
    title: str,
    opens_at: datetime,
    closes_at: datetime,
    seats: int,
    spec: str = "",
    repo_url: str = "",
    ref: str = "HEAD",
    urlpath: str = "",
    time_zone: str = "UTC",
    team: Team | None = None,
    cpu: float | None = None,
    memory_bytes: int | None = None,
    session_minutes: int = 120,
    guests: bool = False,
    email_domains: str = "",
    team_members_only: bool = False,
    mount_volumes: bool = False,
) -> Workshop:
    """A workshop pinned to the commit ``ref`` resolves to now, its environment built ahead
    (the build starts on commit; its page follows it). Seats, CPU and memory are checked
    against the instructor's (or the team's) quota, which the workshop draws from.

    Raises PermissionDenied, InvalidInput (VALIDATION_ERROR, URLPATH_INVALID), the repos
    errors, QuotaExceeded."""
    from apps.quotas.services import reserve_for_workshop

    if not may_create(actor, team):
        raise PermissionDenied("Only team owners and admins can create the team's workshops."
                               if team else "You may not create workshops here.")  # fmt: skip
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise invalid_field("title", "Give the workshop a title (at most 200 characters).")
    _check_window(opens_at, closes_at, creating=True)
    seats = _check_seats(seats)
    session_minutes = _check_minutes(session_minutes)
    time_zone = _zone(time_zone)
    urlpath = sessions.clean_urlpath(urlpath)
    email_domains = _check_domains(email_domains)
    if team_members_only and team is None:
        raise invalid_field("team_members_only", "Only a team's workshop can be for its members.")
    if isinstance(memory_bytes, str):
        memory_bytes = parse_size(memory_bytes)
    reserve_for_workshop(actor, team, seats=seats, cpu=cpu, memory_bytes=memory_bytes,
                         session_minutes=session_minutes, opens_at=opens_at,
                         closes_at=closes_at)  # fmt: skip
    resolved, credential = resolve_input(actor, spec=spec, repo_url=repo_url, ref=ref, team=team)
    build = request_build(resolved, actor, team=team, credential=credential).build
    for _ in range(10):
        try:
            with transaction.atomic():
                workshop = Workshop.objects.create(
                    title=title, owner=actor, team=team, provider=resolved.provider,
                    spec=resolved.persistent_spec.partition("/")[2][:1000],
                    repo_url=resolved.repo_url[:1000], ref=(ref or "HEAD")[:255],
                    resolved_ref=resolved.resolved_ref[:200],
                    display_name=resolved.display_name[:300], urlpath=urlpath, build=build,
                    opens_at=opens_at, closes_at=closes_at, time_zone=time_zone, seats=seats,
                    cpu=cpu, memory_bytes=memory_bytes, session_minutes=session_minutes,
                    guests=guests, email_domains=email_domains,
                    team_members_only=team_members_only, mount_volumes=mount_volumes,
                    code=new_code(),
                )  # fmt: skip
        except IntegrityError:  # the code is taken: draw again
            continue
        if build.status == Build.Status.READY:  # reused: no build_finished will come
            transaction.on_commit(_enqueue_tend)
        return workshop
    raise RuntimeError("could not draw a free workshop code")


def _require_instructor(actor: User, workshop: Workshop) -> None:
    if workshop.owner_id == actor.pk:
        return
    if workshop.team is not None:
        try:
            if get_membership_for_user(actor, workshop.team.slug).can_manage:
                return
        except NotFound:
            pass
    raise NotFound("No such workshop.")


@transaction.atomic
def update_workshop(actor: User, workshop: Workshop, changes: dict[str, Any]) -> Workshop:
    """Change the title, the window (extend it, or open earlier), the seats (add seats; never
    fewer than are taken), the session length (seated sessions get the new length), who may
    join. The environment changes only by ``update_environment``."""
    _require_instructor(actor, workshop)
    workshop = Workshop.objects.select_for_update().get(pk=workshop.pk)
    if workshop.closed_at is not None:
        raise WorkshopClosed("This workshop is closed.")
    if "title" in changes:
        title = (changes["title"] or "").strip()
        if not title or len(title) > 200:
            raise invalid_field("title", "Give the workshop a title (at most 200 characters).")
        workshop.title = title
    opens_at = changes.get("opens_at", workshop.opens_at)
    closes_at = changes.get("closes_at", workshop.closes_at)
    _check_window(opens_at, closes_at, creating=False)
    workshop.opens_at, workshop.closes_at = opens_at, closes_at
    if "closes_at" in changes:
        workshop.close_warned_at = None
    if "seats" in changes:
        workshop.seats = _check_seats(changes["seats"], taken=workshop.seat_set.count())
    if "session_minutes" in changes:
        workshop.session_minutes = _check_minutes(changes["session_minutes"])
        for seat in workshop.seat_set.filter(ends_at__isnull=False):
            seat.ends_at = seat.joined_at + timedelta(minutes=workshop.session_minutes)
            seat.save(update_fields=["ends_at"])
    if {"seats", "opens_at", "closes_at", "session_minutes"} & set(changes):
        from apps.quotas.services import reserve_for_workshop

        reserve_for_workshop(  # more seats, or a longer window, must still fit the quota
            workshop.owner, workshop.team, seats=workshop.seats, cpu=workshop.cpu,
            memory_bytes=workshop.memory_bytes, session_minutes=workshop.session_minutes,
            opens_at=workshop.opens_at, closes_at=workshop.closes_at, exclude_id=workshop.pk,
        )  # fmt: skip
    for name in ("guests", "team_members_only"):
        if name in changes:
            setattr(workshop, name, bool(changes[name]))
    if "email_domains" in changes:
        workshop.email_domains = _check_domains(changes["email_domains"])
    if "time_zone" in changes:
        workshop.time_zone = _zone(changes["time_zone"])
    workshop.save()
    _publish(workshop.pk)
    return workshop


@transaction.atomic
def rotate_code(actor: User, workshop: Workshop) -> Workshop:
    """A new join code; the old one stops working at once (seated attendees keep seats)."""
    _require_instructor(actor, workshop)
    for _ in range(10):
        try:
            with transaction.atomic():
                workshop.code = new_code()
                workshop.code_rotated_at = timezone.now()
                workshop.save(update_fields=["code", "code_rotated_at"])
                return workshop
        except IntegrityError:
            continue
    raise RuntimeError("could not draw a free workshop code")


@transaction.atomic
def update_environment(actor: User, workshop: Workshop) -> Workshop:
    """Resolve the ref again and build the new commit ahead; warm servers of the old one are
    replaced once it is built (seated attendees keep theirs)."""
    _require_instructor(actor, workshop)
    if workshop.is_closed:
        raise WorkshopClosed("This workshop is closed.")
    resolved, credential = resolve_input(
        actor, repo_url=workshop.repo_url if workshop.provider == "git" else "",
        spec="" if workshop.provider == "git" else f"{workshop.provider}/"
        + _unpinned(workshop), ref=workshop.ref, team=workshop.team,
    )  # fmt: skip
    build = request_build(resolved, actor, team=workshop.team, credential=credential).build
    workshop.build = build
    workshop.resolved_ref = resolved.resolved_ref[:200]
    workshop.spec = resolved.persistent_spec.partition("/")[2][:1000]
    workshop.build_failure_notified = False
    workshop.save(update_fields=["build", "resolved_ref", "spec", "build_failure_notified"])
    _publish(workshop.pk)
    return workshop


def _unpinned(workshop: Workshop) -> str:
    """The spec with the instructor's ref in place of the pinned commit."""
    head, _, _ = workshop.spec.rpartition("/")
    return f"{head}/{workshop.ref}" if head else workshop.spec


def close_workshop(actor: User, workshop: Workshop) -> Workshop:
    _require_instructor(actor, workshop)
    return _close(workshop.pk, "The instructor closed the workshop; the session was stopped.")


def _close(workshop_id: int, reason: str) -> Workshop:
    with transaction.atomic():
        workshop = Workshop.objects.select_for_update().get(pk=workshop_id)
        if workshop.closed_at is None:
            workshop.closed_at = timezone.now()
            workshop.save(update_fields=["closed_at"])
    for session in Session.objects.filter(workshop=workshop, status__in=Session.ACTIVE).exclude(
        status=Session.Status.STOPPING
    ):
        _stop(session, reason)
    _publish(workshop.pk)
    return workshop


def _stop(session: Session, reason: str) -> None:
    with contextlib.suppress(sessions.SessionNotStoppable):
        sessions.request_stop(session, reason)


# --- joining --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    seat: Seat
    session: Session
    guest_owner: str  # the guest's secret (their browser's owner id); "" for a user
    warm: bool  # a warm server was handed over
    rejoined: bool


def workshop_for_code(code: str) -> Workshop:
    workshop = (
        Workshop.objects.select_related("build", "team", "owner")
        .filter(code=normalise_code(code))
        .first()
    )  # fmt: skip
    if workshop is None:
        raise WorkshopNotFound()
    return workshop


def check_open(workshop: Workshop) -> None:
    """Raise the reason nobody can join now (closed, not open yet), or nothing."""
    if workshop.is_closed:
        raise WorkshopClosed(f"“{workshop.title}” has closed.")
    if workshop.status != Workshop.Status.OPEN:
        when = timezone.localtime(workshop.opens_at, ZoneInfo(workshop.time_zone))
        raise WorkshopNotOpen(
            f"“{workshop.title}” opens at {when:%H:%M} on {when:%-d %B %Y} ({workshop.time_zone}).",
            opens_at=workshop.opens_at.isoformat(),
        )


def _check_person(workshop: Workshop, user: User | None) -> None:
    if user is None:
        if not workshop.guests:
            raise SignInRequired()
        return
    if workshop.domains:
        domain = user.email.rpartition("@")[2].lower()
        if domain not in workshop.domains:
            raise JoinNotAllowed(
                f"This workshop is for addresses at {', '.join(workshop.domains)}; you are "
                f"signed in as {user.email}."
            )
    if workshop.team_members_only and workshop.team is not None:
        try:
            get_membership_for_user(user, workshop.team.slug)
        except NotFound:
            raise JoinNotAllowed(f"This workshop is for members of {workshop.team}.") from None


def _guest_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name or len(name) > 100 or any(ord(c) < 0x20 for c in name):
        raise invalid_field("name", "Give a display name (at most 100 characters).")
    return name


def join(code: str, *, user: User | None = None, name: str = "", guest_owner: str = "") -> Joined:
    """Take a seat (or find the one already held), and a server for it: a warm one handed
    over when the pool has one, else a cold start. ``guest_owner`` is a guest's secret (their
    browser's owner id, or the token an API guest got on first join); a guest without one is
    given one. Never oversells: the workshop's row is locked while the seat is counted.

    Raises WorkshopNotFound (404), WorkshopClosed (410), WorkshopNotOpen (409),
    WorkshopFull (409), SignInRequired (401), JoinNotAllowed (403), InvalidInput."""
    workshop = workshop_for_code(code)
    check_open(workshop)
    _check_person(workshop, user)
    if user is None:
        guest_owner = guest_owner or secrets.token_hex(16)
        display = _guest_name(name)
    else:
        display = (name or "").strip()[:100] or user.get_full_name() or user.email or user.username
    digest = guest_digest(guest_owner) if user is None else ""
    with transaction.atomic():
        workshop = (
            Workshop.objects.select_for_update(of=("self",))
            .select_related("build")
            .get(pk=workshop.pk)
        )
        check_open(workshop)
        seats = Seat.objects.filter(workshop=workshop)
        mine = seats.filter(user=user) if user is not None else seats.filter(guest_digest=digest)
        seat = mine.select_related("session").first()
        rejoined = seat is not None
        if seat is None:
            taken = seats.count()
            if taken >= workshop.seats:
                title, n = workshop.title, workshop.seats
                message = (f"The only seat of “{title}” is taken." if n == 1
                           else f"All {n} seats of “{title}” are taken.")  # fmt: skip
                raise WorkshopFull(message, seats=n)
            seat = Seat.objects.create(workshop=workshop, user=user, guest_digest=digest,
                                       name=display)  # fmt: skip
        if seat.session is not None and not seat.session.is_terminal:
            return Joined(seat, seat.session, guest_owner, warm=False, rejoined=rejoined)
        session, warm = _seat_server(workshop, seat, user, guest_owner)
        seat.session = session
        seat.joined_at = seat.joined_at if rejoined else timezone.now()
        seat.ends_at = timezone.now() + timedelta(minutes=workshop.session_minutes)
        seat.save(update_fields=["session", "joined_at", "ends_at"])
        transaction.on_commit(partial(_publish, workshop.pk))
        transaction.on_commit(_enqueue_tend)
    return Joined(seat, session, guest_owner, warm=warm, rejoined=rejoined)


def _seat_server(
    workshop: Workshop, seat: Seat, user: User | None, guest_owner: str
) -> tuple[Session, bool]:
    """A warm server of the workshop's environment, handed over; else a cold start."""
    warm = (
        Session.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(workshop=workshop, seat__isnull=True, build=workshop.build,
                status__in=(Session.Status.READY, Session.Status.LAUNCHING))
        .order_by("-status", "created_at")  # ready before launching
        .first()
    )  # fmt: skip
    if warm is not None and not workshop.mount_volumes:
        warm.user = user
        warm.anonymous_owner = "" if user is not None else guest_owner
        # the idle clock starts at the handover: the pool's wait is not the attendee's idling
        # (keepalive_at, as refresh_activity overwrites last_activity with the hub's older one)
        # and its age (the site's maximum) from the handover too
        warm.keepalive_at = warm.handed_over_at = timezone.now()
        warm.save(update_fields=["user", "anonymous_owner", "keepalive_at", "handed_over_at"])
        add_event(warm, "ready" if warm.status == Session.Status.READY else "launching",
                  f"Your seat in “{workshop.title}” is ready: opening it.")  # fmt: skip
        return warm, True
    memory, cpu = _seat_size(workshop)
    assert workshop.build is not None  # open: built (check_open)
    session = sessions.open_session(
        workshop.build, user=user, anonymous_owner="" if user is not None else guest_owner,
        team=None, hub_user=sessions.hub_user_for(user, guest_owner), urlpath=workshop.urlpath,
        memory_bytes=memory, max_processes=settings.BINDERY_SESSION_PROCESSES, cpu=cpu,
        workshop_id=workshop.pk,
    )  # fmt: skip
    return session, False


def _seat_size(workshop: Workshop) -> tuple[int, float | None]:
    memory = workshop.memory_bytes or parse_size(str(settings.BINDERY_SESSION_MEMORY))
    return int(memory), workshop.cpu


def _enqueue_tend() -> None:
    from apps.workshops.tasks import tend_workshops

    try:
        tend_workshops.delay()
    except Exception:
        log.warning("could not enqueue tend_workshops; beat will run it")


def _publish(workshop_id: int) -> None:
    from portal.events import publish

    publish(f"workshop-{workshop_id}", {"kind": "roster", "id": workshop_id})


# --- instructor actions on seats ------------------------------------------------------------


def get_seat(workshop: Workshop, seat_id: int | str) -> Seat:
    from portal.utils import as_id

    seat = workshop.seat_set.select_related("session", "user").filter(pk=as_id(seat_id)).first()
    if seat is None:
        raise NotFound("No such attendee.")
    return seat


def stop_seat(actor: User, workshop: Workshop, seat: Seat) -> Seat:
    _require_instructor(actor, workshop)
    if seat.session is not None and not seat.session.is_terminal:
        _stop(seat.session, "The instructor stopped this session.")
    _publish(workshop.pk)
    return seat


def restart_seat(actor: User, workshop: Workshop, seat: Seat) -> Seat:
    """Stop the attendee's server and give their seat a fresh one (warm when there is)."""
    _require_instructor(actor, workshop)
    check_open(workshop)
    old = seat.session
    if seat.is_guest and (old is None or not old.anonymous_owner):
        raise Conflict("This guest's session is gone: they get a new one by joining again.",
                       code="SEAT_NEEDS_REJOIN")  # fmt: skip
    if old is not None and not old.is_terminal:
        _stop(old, "The instructor restarted this session.")
    with transaction.atomic():
        workshop = (
            Workshop.objects.select_for_update(of=("self",))
            .select_related("build")
            .get(pk=workshop.pk)
        )
        seat = Seat.objects.select_for_update().get(pk=seat.pk)
        owner = old.anonymous_owner if old is not None else ""
        session, _ = _seat_server(workshop, seat, seat.user, owner)
        seat.session = session
        seat.ends_at = timezone.now() + timedelta(minutes=workshop.session_minutes)
        seat.save(update_fields=["session", "ends_at"])
        transaction.on_commit(partial(_publish, workshop.pk))
        transaction.on_commit(_enqueue_tend)
    return seat


def stop_all(actor: User, workshop: Workshop) -> int:
    _require_instructor(actor, workshop)
    n = 0
    for seat in workshop.seat_set.select_related("session"):
        if seat.session is not None and not seat.session.is_terminal:
            _stop(seat.session, "The instructor stopped every session.")
            n += 1
    _publish(workshop.pk)
    return n


# --- tending (beat, and after every join) ---------------------------------------------------


def warm_pool_target(workshop: Workshop, now: datetime) -> int:
    """How many unclaimed servers the workshop should have ready now: one per seat still
    free, from the lead time before opening until it closes; none when attendees' volumes are
    mounted (a running server cannot gain a mount) or the environment is not built."""
    if workshop.mount_volumes or workshop.is_closed or workshop.build is None:
        return 0
    if workshop.build.status != Build.Status.READY or now < workshop.warm_from:
        return 0
    free = workshop.seats - workshop.seat_set.count()
    return max(0, free)


def fill_warm_pools(now: datetime | None = None) -> dict[int, int]:
    """Start warm servers where pools are short, fairly across workshops (one each in turn),
    never more than ``BINDERY_WORKSHOP_WARM_MAX`` unclaimed servers in all, nor more than
    ``BINDERY_WORKSHOP_WARM_STARTS`` starting at once. Stops warm servers of an environment
    the workshop no longer uses. Returns {workshop id: servers started now}."""
    now = now or timezone.now()
    with transaction.atomic():
        # one filler at a time (beat's round and the refills after joins run at once): the
        # budget is counted and spent under the lock
        advisory_xact_lock("bindery-warm-pools")
        return _fill_warm_pools(now)


def _fill_warm_pools(now: datetime) -> dict[int, int]:
    started: dict[int, int] = {}
    candidates = list(
        Workshop.objects.filter(closed_at__isnull=True, closes_at__gt=now,
                                build__status=Build.Status.READY, mount_volumes=False,
                                opens_at__lte=now + timedelta(
                                    seconds=settings.BINDERY_WORKSHOP_WARM_LEAD))
        .select_related("build")
    )  # fmt: skip
    unclaimed = Session.objects.filter(workshop__isnull=False, seat__isnull=True,
                                       status__in=Session.ACTIVE)  # fmt: skip
    for stale in unclaimed.exclude(workshop__build_id=F("build_id")):
        _stop(stale, "The workshop's environment changed; this warm server was replaced.")
    recycle = now - timedelta(seconds=settings.BINDERY_WORKSHOP_WARM_RECYCLE)
    for old in unclaimed.filter(status=Session.Status.READY, ready_at__lt=recycle):
        _stop(old, "This warm server waited too long for an attendee; a fresh one replaces it.")
    budget = settings.BINDERY_WORKSHOP_WARM_MAX - unclaimed.filter(
        status__in=(Session.Status.LAUNCHING, Session.Status.READY, Session.Status.BUILDING,
                    Session.Status.PENDING)).count()  # fmt: skip
    starting = unclaimed.filter(status=Session.Status.LAUNCHING, ready_at__isnull=True).count()
    starts = max(0, settings.BINDERY_WORKSHOP_WARM_STARTS - starting)
    shortfall = {}
    for workshop in candidates:
        have = unclaimed.filter(workshop=workshop).count()
        need = warm_pool_target(workshop, now) - have
        if need > 0:
            shortfall[workshop.pk] = (workshop, need)
    while budget > 0 and starts > 0 and shortfall:
        for wid in list(shortfall):
            if budget <= 0 or starts <= 0:
                break
            workshop, need = shortfall[wid]
            _start_warm(workshop)
            started[wid] = started.get(wid, 0) + 1
            budget, starts = budget - 1, starts - 1
            if need - 1 <= 0:
                del shortfall[wid]
            else:
                shortfall[wid] = (workshop, need - 1)
    return started


def _start_warm(workshop: Workshop) -> Session:
    memory, cpu = _seat_size(workshop)
    assert workshop.build is not None  # only built workshops are warmed
    with transaction.atomic():
        owner = f"warm-{secrets.token_hex(12)}"
        return sessions.open_session(
            workshop.build, user=None, anonymous_owner=owner, team=None,
            hub_user=sessions.warm_hub_user(workshop.pk), urlpath=workshop.urlpath,
            memory_bytes=memory, max_processes=settings.BINDERY_SESSION_PROCESSES, cpu=cpu,
            workshop_id=workshop.pk,
        )  # fmt: skip


def tend(now: datetime | None = None) -> dict[str, Any]:
    """Beat's round: close what is due (warning first), end sessions past their length,
    remove guests' seats after the retention, refill warm pools."""
    now = now or timezone.now()
    report: dict[str, Any] = {"closed": [], "warned": [], "ended": [], "forgotten": 0}
    warning = timedelta(minutes=settings.BINDERY_WORKSHOP_CLOSE_WARNING)
    due = Workshop.objects.filter(closed_at__isnull=True, close_warned_at__isnull=True,
                                  closes_at__lte=now + warning, closes_at__gt=now)  # fmt: skip
    for workshop in due:
        minutes = max(1, int((workshop.closes_at - now).total_seconds() // 60))
        for seat in workshop.seat_set.select_related("session"):
            if seat.session is not None and seat.session.status == Session.Status.READY:
                add_event(seat.session, "workshop",
                          f"“{workshop.title}” closes in {minutes} minute"
                          f"{'s' if minutes != 1 else ''}: save your work and download what "
                          "you want to keep.")  # fmt: skip
        Workshop.objects.filter(pk=workshop.pk).update(close_warned_at=now)
        report["warned"].append(workshop.pk)
    for workshop_id in Workshop.objects.filter(closed_at__isnull=True, closes_at__lte=now
                                               ).values_list("pk", flat=True):  # fmt: skip
        _close(workshop_id, "The workshop has closed; the session was stopped.")
        report["closed"].append(workshop_id)
    # closed workshops whose sessions are still running (a stop that failed, a late join)
    for session in Session.objects.filter(workshop__closed_at__isnull=False,
                                          status__in=(*Session.RUNNING, Session.Status.PENDING,
                                                      Session.Status.BUILDING)):  # fmt: skip
        _stop(session, "The workshop has closed; the session was stopped.")
    for seat in Seat.objects.filter(ends_at__lte=now, session__status__in=Session.RUNNING
                                    ).select_related("session"):  # fmt: skip
        assert seat.session is not None
        _stop(seat.session, "The workshop's session length is over; the session was stopped.")
        report["ended"].append(seat.session.pk)
    retention = timedelta(seconds=settings.BINDERY_WORKSHOP_GUEST_RETENTION)
    expired = Seat.objects.filter(user__isnull=True, workshop__closed_at__lte=now - retention)
    gone, _ = expired.exclude(session__status__in=Session.ACTIVE).delete()
    report["forgotten"] = gone
    report["warmed"] = fill_warm_pools(now)
    return report


# --- reads ----------------------------------------------------------------------------------


def warm_counts(workshop: Workshop) -> dict[str, int]:
    unclaimed = Session.objects.filter(workshop=workshop, seat__isnull=True)
    return {
        "ready": unclaimed.filter(status=Session.Status.READY).count(),
        "starting": unclaimed.filter(
            status__in=(Session.Status.LAUNCHING, Session.Status.BUILDING)
        ).count(),
    }


def time_left(workshop: Workshop, seat: Seat | None = None, now: datetime | None = None) -> int:
    """Seconds until the attendee's session ends (its length or the closing, the sooner)."""
    now = now or timezone.now()
    end = workshop.closes_at
    if seat is not None and seat.ends_at is not None:
        end = min(end, seat.ends_at)
    return max(0, int((end - now).total_seconds()))


def warm_server_ready(session_id: int) -> None:
    """A warm server became ready: one fewer is starting, so the pool may start another."""
    if Session.objects.filter(pk=session_id, workshop__isnull=False, seat__isnull=True).exists():
        _enqueue_tend()


def build_ended(build_id: int) -> None:
    """The instructor hears of a failed pre-build once (email; the page shows it); a ready
    one starts the warm pool when the workshop is within its lead time."""
    from django.core.mail import send_mail

    for workshop in Workshop.objects.filter(build_id=build_id).select_related("build", "owner"):
        build = workshop.build
        assert build is not None
        if build.status == Build.Status.READY:
            _enqueue_tend()
            continue
        with transaction.atomic():
            claimed = Workshop.objects.filter(pk=workshop.pk, build_failure_notified=False
                                              ).update(build_failure_notified=True)  # fmt: skip
        if claimed and workshop.owner.email:
            page = settings.SITE_URL.rstrip("/") + f"/workshops/{workshop.pk}/"
            send_mail(
                f"The environment of “{workshop.title}” did not build",
                f"The environment of your workshop “{workshop.title}” failed to build:\n\n"
                f"{build.error_message or build.status}\n\n"
                f"The build log and a retry are on the workshop's page: {page}\n",
                None, [workshop.owner.email], fail_silently=True,
            )  # fmt: skip
        _publish(workshop.pk)
