"""Launch events: stored (replayed to late listeners) and published live."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from apps.sessions.models import Session, SessionEvent
from portal.events import publish


def group_for(session_id: int) -> str:
    return f"session-{session_id}"


def event_payload(event: SessionEvent) -> dict[str, Any]:
    return {"n": event.n, "phase": event.phase, "message": event.message}


def status_payload(session: Session) -> dict[str, Any]:
    return {
        "id": session.pk,
        "status": session.status,
        "build": session.build_id,
        "error_code": session.error_code,
        "error_message": session.error_message,
        "url": session.url,
    }


def add_event(session: Session, phase: str, message: str) -> SessionEvent:
    """Append a launch event; it is published after the surrounding transaction commits."""
    with transaction.atomic():
        Session.objects.filter(pk=session.pk).update(events_size=F("events_size") + 1)
        n = Session.objects.values_list("events_size", flat=True).get(pk=session.pk)
        event = SessionEvent.objects.create(session=session, n=n, phase=phase, message=message)
    session.events_size = n
    transaction.on_commit(lambda: publish_session(session.pk, event))
    if session.workshop_id:  # the workshop's roster shows its seats' sessions live
        transaction.on_commit(lambda: publish(f"workshop-{session.workshop_id}", {"kind": "seat"}))
    return event


def publish_session(session_id: int, event: SessionEvent | None = None) -> None:
    payload: dict[str, Any] = {"kind": "status", "id": session_id}
    if event is not None:
        payload = {"kind": "event", **event_payload(event)}
    publish(group_for(session_id), payload)
