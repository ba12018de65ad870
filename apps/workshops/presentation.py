"""The roster as the instructor reads it: one dict per seat and a summary of the workshop,
the same for the page, its websocket and the CSV (what the script redraws is what the
server drew). Reads only."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.humanize.templatetags.humanize import naturaltime
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone

from apps.sessions.models import Session
from apps.sessions.services import session_memory_used
from apps.workshops import selectors, services
from apps.workshops.models import Seat, Workshop

# Sessions the instructor can still stop (a stopping one is on its way already).
_STOPPABLE = (Session.Status.PENDING, Session.Status.BUILDING, Session.Status.LAUNCHING,
              Session.Status.READY)  # fmt: skip


def duration(seconds: int) -> str:
    """Time left as people glance at it: "1 h 12 min", "12 min", "under a minute"."""
    minutes = seconds // 60
    if seconds <= 0:
        return "no time"
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def memory_label(used: int | None, limit: int | None) -> str:
    """Memory as people read it: "312 MB of 2.0 GB"; "—" when it cannot be read."""
    if used is None:
        return "—"
    mb = round(used / 1024**2)
    shown = f"{mb}\xa0MB" if used >= 1024**2 and mb < 1024 else str(filesizeformat(used))
    return f"{shown} of {filesizeformat(limit)}" if limit else shown


def local(workshop: Workshop, when: datetime) -> datetime:
    """``when`` in the workshop's own time zone (the one its instructor gave)."""
    return timezone.localtime(when, ZoneInfo(workshop.time_zone))


def moment(workshop: Workshop, when: datetime | None) -> str:
    """A moment in the workshop's time zone: "14:05" today, "3 May 14:05" another day."""
    if when is None:
        return "—"
    at, today = local(workshop, when), local(workshop, timezone.now())
    return f"{at:%H:%M}" if at.date() == today.date() else f"{at:%-d %b %H:%M}"


def seat_status(seat: Seat) -> tuple[str, str]:
    """(value, label) of the seat's server: its session's status, or "none"."""
    if seat.session is None:
        return "none", "No server"
    return seat.session.status, seat.session.get_status_display()


def row(workshop: Workshop, seat: Seat, *, is_open: bool) -> dict[str, Any]:
    session = seat.session
    status, label = seat_status(seat)
    used = session_memory_used(session) if session is not None else None
    base = f"/workshops/{workshop.pk}/seats/{seat.pk}/"
    active = session is not None and session.status in _STOPPABLE
    return {
        "id": seat.pk,
        "name": seat.name,
        "who": seat.user.email or seat.user.username if seat.user is not None else "guest",
        "guest": seat.is_guest,
        "joined_at": seat.joined_at.isoformat(),
        "joined": moment(workshop, seat.joined_at),
        "status": status,
        "status_label": label,
        "last_activity": session.last_activity.isoformat()
        if session is not None and session.last_activity else None,
        "last_activity_label": naturaltime(session.last_activity)
        if session is not None and session.last_activity else "—",
        "memory": memory_label(used, session.memory_bytes if session is not None else None),
        "memory_used_bytes": used,
        "time_left": duration(services.time_left(workshop, seat))
        if active and seat.ends_at else "",
        "session": session.pk if session is not None else None,
        "error_message": session.error_message if session is not None else "",
        "can_stop": active,
        "can_restart": is_open,
        "stop_url": base + "stop/",
        "restart_url": base + "restart/",
        "files_url": base + "files/" if session is not None and status == "ready" else "",
    }  # fmt: skip


def summary(workshop: Workshop, taken: int) -> dict[str, Any]:
    status = workshop.status
    return {
        "id": workshop.pk,
        "status": status,
        "status_label": Workshop.Status(status).label,
        "seats": workshop.seats,
        "seats_taken": taken,
        "warm": services.warm_counts(workshop),
        "code": workshop.code,
        "join_path": reverse("workshop-join", args=[workshop.code]),
        "closes_at": workshop.closes_at.isoformat(),
        "session_minutes": workshop.session_minutes,
        "build_status": workshop.build.status if workshop.build is not None else "",
    }


def roster_payload(workshop_id: int) -> dict[str, Any]:
    """The websocket's message: ``{"kind": "roster", "workshop": {...}, "rows": [...]}``
    read fresh from the database (and each ready server's memory from its backend)."""
    workshop = Workshop.objects.select_related("build").get(pk=workshop_id)
    seats = list(selectors.roster(workshop))
    is_open = workshop.status == Workshop.Status.OPEN
    return {
        "kind": "roster",
        "workshop": summary(workshop, len(seats)),
        "rows": [row(workshop, seat, is_open=is_open) for seat in seats],
    }


def window(workshop: Workshop) -> dict[str, str]:
    """When it opens and closes, as people read it, in the workshop's time zone."""
    # closed early: it ended when the instructor closed it, not when it was meant to
    ended = min(workshop.closes_at, workshop.closed_at or workshop.closes_at)
    opens, closes = local(workshop, workshop.opens_at), local(workshop, ended)
    same_day = opens.date() == closes.date()
    return {
        "opens": f"{opens:%H:%M} on {opens:%a %-d %b %Y}",
        "closes": f"{closes:%H:%M}" if same_day else f"{closes:%H:%M} on {closes:%a %-d %b %Y}",
        "range": f"{opens:%a %-d %b %Y, %H:%M}\N{EN DASH}{closes:%H:%M}" if same_day
        else f"{opens:%a %-d %b %Y, %H:%M} \N{EN DASH} {closes:%a %-d %b %Y, %H:%M}",
        "zone": workshop.time_zone,
        "opens_at": workshop.opens_at.isoformat(),
        "closes_at": workshop.closes_at.isoformat(),
    }  # fmt: skip


def wait_state(workshop: Workshop) -> dict[str, Any]:
    """The waiting page's data (and its poll's answer): the status and the seconds to the
    opening; ``ready`` once people can join."""
    now = timezone.now()
    status = workshop.status
    return {
        "status": status,
        "ready": status in (Workshop.Status.OPEN, Workshop.Status.CLOSED),
        "opens_at": workshop.opens_at.isoformat(),
        "seconds": max(0, int((workshop.opens_at - now).total_seconds())),
        "zone": workshop.time_zone,
    }


def seat_banner(seat: Seat, workshop: Workshop) -> dict[str, Any]:
    """What an attendee sees of their seat: "Your seat: Open your server · 1 h 12 min left"."""
    session = seat.session
    running = session is not None and not session.is_terminal
    left = services.time_left(workshop, seat)
    end = workshop.closes_at if seat.ends_at is None else min(workshop.closes_at, seat.ends_at)
    return {
        "title": workshop.title,
        "code": workshop.code,
        "name": seat.name,
        "running": running,
        "status": session.status if session is not None else "none",
        "page": reverse("session-launch", args=[session.pk]) if running and session else "",
        "left": duration(left),
        "ends_at": end.isoformat(),
        "join_page": reverse("workshop-join", args=[workshop.code]),
    }


def banner_for_session(session: Session) -> dict[str, Any] | None:
    """The banner of a workshop seat's launch page; None for any other session (no query)."""
    if session.workshop_id is None:
        return None
    seat = selectors.seat_of_session(session.pk)
    return seat_banner(seat, seat.workshop) if seat is not None else None
