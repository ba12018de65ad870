"""Follow a launch: the build's log lines and the session's events, interleaved in the
order they happened, then live until the session is ready or has ended.

Subscribes to the session's and the build's groups on ONE channel before reading the
database, so nothing falls between the replay and the live part; numbers (``n``) drop
repeats and gaps are filled from the database. Survives the channel layer failing and the
follower failing (see ``portal.events``); a stream that cannot go on ends with a ``failed``
item (``STREAM_UNAVAILABLE``) instead of falling silent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from apps.builds.logs import group_for as build_group
from apps.builds.models import BuildLogLine
from apps.sessions.events import event_payload, group_for, status_payload
from apps.sessions.models import Session, SessionEvent
from portal.events import keep_following, listen, subscribe, unsubscribe

END_STATES = {Session.Status.READY, Session.Status.STOPPED, Session.Status.FAILED}


class _Cursor:
    """The last build line and launch event sent; a restarted follower resumes from it."""

    def __init__(self, session_id: int, after_line: int, after_event: int):
        self.session_id = session_id
        self.build_id = 0  # known once the follower has read the session
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
    ``keepalive`` items; ends once the session is ready, stopped or failed. A stream that
    cannot go on ends with ``{"kind": "failed", "error": "STREAM_UNAVAILABLE"}`` instead
    (resume with the last line and event numbers)."""
    cursor = _Cursor(session_id, after_line, after_event)
    follower = keep_following(lambda: _follow(cursor, keepalive), name=group_for(session_id))
    async with aclosing(follower):
        async for item in follower:
            yield item


async def _follow(cursor: _Cursor, keepalive: float | None) -> AsyncGenerator[dict[str, Any], None]:
    session_id = cursor.session_id
    layer = get_channel_layer()
    assert layer is not None
    session = await Session.objects.aget(pk=session_id)
    cursor.build_id = session.build_id
    channel = await layer.new_channel()
    groups = [group_for(session_id), build_group(session.build_id)]
    subscribed = await subscribe(layer, channel, groups)  # first: nothing falls between
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
        events = listen(
            layer,
            channel,
            keepalive=keepalive,
            check_every=settings.BINDERY_STREAM_CHECK_EVERY,
            groups=groups,
            subscribed=subscribed,
        )
        async with aclosing(events):
            async for incoming in events:
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
                    # The row first, then what was stored: all that was committed with
                    # (or before) a final status is sent before that status.
                    session = await Session.objects.aget(pk=session_id)
                    for item in await cursor.catch_up():
                        yield item
                    if session.status in END_STATES:
                        yield {"kind": "status", **status_payload(session)}
                        return
    finally:
        await unsubscribe(layer, channel, groups)
