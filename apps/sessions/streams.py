"""Follow a launch: the build's log lines and the session's events, interleaved in the
order they happened, then live until the session is ready or has ended.

Subscribes to the session's and the build's groups on ONE channel before reading the
database, so nothing falls between the replay and the live part; numbers (``n``) drop
repeats and gaps are filled from the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer

from apps.builds.logs import group_for as build_group
from apps.builds.models import BuildLogLine
from apps.sessions.events import event_payload, group_for, status_payload
from apps.sessions.models import Session, SessionEvent
from portal.events import listen

CHECK_EVERY = 10.0
END_STATES = {Session.Status.READY, Session.Status.STOPPED, Session.Status.FAILED}


class _Cursor:
    def __init__(self, session: Session, after_line: int, after_event: int):
        self.session_id = session.pk
        self.build_id = session.build_id
        self.line = after_line
        self.event = after_event

    async def catch_up(self) -> list[dict[str, Any]]:
        """Everything stored after the cursor, in the order it happened."""
        lines = [
            (line.created_at, 0, {"kind": "log", "n": line.n, "phase": line.phase,
                                  "stream": line.stream, "text": line.text})
            async for line in BuildLogLine.objects.filter(
                build_id=self.build_id, n__gt=self.line
            ).order_by("n")[:2000]
        ]  # fmt: skip
        events = [
            (event.created_at, 1, {"kind": "event", **event_payload(event)})
            async for event in SessionEvent.objects.filter(
                session_id=self.session_id, n__gt=self.event
            ).order_by("n")
        ]
        merged = [item for _, _, item in sorted(lines + events, key=lambda t: (t[0], t[1]))]
        for item in merged:
            self.advance(item)
        return merged

    def advance(self, item: dict[str, Any]) -> None:
        if item["kind"] == "log":
            self.line = max(self.line, item["n"])
        else:
            self.event = max(self.event, item["n"])

    def fresh(self, item: dict[str, Any]) -> bool | None:
        """True: the next one; False: seen already; None: a gap before it."""
        last = self.line if item["kind"] == "log" else self.event
        if item["n"] <= last:
            return False
        return True if item["n"] == last + 1 else None


async def follow_session(
    session_id: int, after_line: int = 0, after_event: int = 0, *, keepalive: float | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield ``log`` (one build line), ``event`` (a launch step), ``status`` and
    ``keepalive`` items; ends once the session is ready, stopped or failed."""
    layer = get_channel_layer()
    assert layer is not None
    session = await Session.objects.aget(pk=session_id)
    channel = await layer.new_channel()
    groups = [group_for(session_id), build_group(session.build_id)]
    for group in groups:
        await layer.group_add(group, channel)
    cursor = _Cursor(session, after_line, after_event)
    try:
        yield {"kind": "status", **status_payload(session)}
        for item in await cursor.catch_up():
            yield item
        session = await Session.objects.aget(pk=session_id)
        if session.status in END_STATES:
            for item in await cursor.catch_up():
                yield item
            yield {"kind": "status", **status_payload(session)}
            return
        async for incoming in listen(layer, channel, keepalive=keepalive, check_every=CHECK_EVERY):
            if incoming["kind"] == "keepalive":
                yield incoming
                continue
            items: list[dict[str, Any]] = []
            if incoming["kind"] == "log":
                items = [{"kind": "log", **line} for line in incoming["lines"]]
            elif incoming["kind"] == "event":
                items = [incoming]
            gap = False
            for item in items:
                state = cursor.fresh(item)
                if state is None:
                    gap = True
                    break
                if state:
                    cursor.advance(item)
                    yield item
            if (
                gap
                or incoming["kind"] in ("status", "check")
                or any(i["kind"] == "event" for i in items)
            ):
                for item in await cursor.catch_up():
                    yield item
                session = await Session.objects.aget(pk=session_id)
                if session.status in END_STATES:
                    yield {"kind": "status", **status_payload(session)}
                    return
    finally:
        for group in groups:
            await layer.group_discard(group, channel)
