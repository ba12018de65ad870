"""Follow a build: its status, every stored log line from a given number, then live events
until it ends. Shared by the websocket consumer and the event-stream endpoint.

Survives the channel layer failing (``portal.events.listen`` reconnects and meanwhile the
rows are re-read) and the follower itself failing (``keep_following`` restarts it from the
last line sent); a stream that cannot go on ends with a ``failed`` item
(``STREAM_UNAVAILABLE``) instead of falling silent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from apps.builds.logs import group_for, line_payload, status_payload
from apps.builds.models import Build, BuildLogLine
from portal.events import keep_following, listen, subscribe, unsubscribe

REPLAY_CHUNK = 500


@dataclass
class _Position:
    last: int  # the last line number sent


async def _lines_after(build_id: int, after: int) -> list[dict[str, Any]]:
    rows = BuildLogLine.objects.filter(build_id=build_id, n__gt=after).order_by("n")
    return [line_payload(line) async for line in rows[:REPLAY_CHUNK]]


async def _replay(build_id: int, after: int) -> AsyncIterator[list[dict[str, Any]]]:
    while True:
        lines = await _lines_after(build_id, after)
        if not lines:
            return
        yield lines
        after = lines[-1]["n"]
        if len(lines) < REPLAY_CHUNK:
            return


async def follow_build(
    build_id: int, after: int = 0, *, keepalive: float | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield ``{"kind": "status"|"log"|"keepalive", ...}`` events; ends after the final
    status. Log events carry ``lines`` numbered ``n`` > ``after``, without gaps or repeats.
    A stream that cannot go on ends with ``{"kind": "failed", "error": "STREAM_UNAVAILABLE"}``
    instead (resume with the last line number)."""
    position = _Position(after)
    follower = keep_following(
        lambda: _follow(build_id, position, keepalive), name=group_for(build_id)
    )
    async with aclosing(follower):
        async for item in follower:
            yield item


async def _follow(
    build_id: int, position: _Position, keepalive: float | None
) -> AsyncGenerator[dict[str, Any], None]:
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    groups = [group_for(build_id)]
    subscribed = await subscribe(layer, channel, groups)  # first: nothing falls between

    async def replay() -> AsyncIterator[dict[str, Any]]:
        async for lines in _replay(build_id, position.last):
            position.last = lines[-1]["n"]
            yield {"kind": "log", "lines": lines}

    try:
        build = await Build.objects.aget(pk=build_id)
        yield {"kind": "status", **status_payload(build)}
        async for item in replay():
            yield item
        build = await Build.objects.aget(pk=build_id)
        if build.is_terminal:
            async for item in replay():
                yield item
            yield {"kind": "status", **status_payload(build)}
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
            async for event in events:
                if event["kind"] == "keepalive":
                    yield event
                    continue
                if event["kind"] == "log":
                    lines = [line for line in event["lines"] if line["n"] > position.last]
                    if lines and lines[0]["n"] != position.last + 1:  # a gap: fill it from the rows
                        async for item in replay():
                            yield item
                        lines = [line for line in lines if line["n"] > position.last]
                    if lines:
                        position.last = lines[-1]["n"]
                        yield {"kind": "log", "lines": lines}
                    continue
                # A status change (or a periodic check): trust the row, not the message.
                build = await Build.objects.aget(pk=build_id)
                async for item in replay():
                    yield item
                if event["kind"] == "status" or build.is_terminal:
                    yield {"kind": "status", **status_payload(build)}
                if build.is_terminal:
                    return
    finally:
        await unsubscribe(layer, channel, groups)
