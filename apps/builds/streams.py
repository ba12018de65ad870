"""Follow a build: its status, every stored log line from a given number, then live events
until it ends. Shared by the websocket consumer and the event-stream endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer

from apps.builds.logs import group_for, line_payload, status_payload
from apps.builds.models import Build, BuildLogLine
from portal.events import listen

REPLAY_CHUNK = 500
CHECK_EVERY = 15.0  # seconds without events before re-reading the row (a lost publish)


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
    status. Log events carry ``lines`` numbered ``n`` > ``after``, without gaps or repeats."""
    layer = get_channel_layer()
    assert layer is not None
    channel = await layer.new_channel()
    group = group_for(build_id)
    await layer.group_add(group, channel)  # subscribe first: nothing falls between
    last = after
    try:
        build = await Build.objects.aget(pk=build_id)
        yield {"kind": "status", **status_payload(build)}
        async for lines in _replay(build_id, last):
            last = lines[-1]["n"]
            yield {"kind": "log", "lines": lines}
        build = await Build.objects.aget(pk=build_id)
        if build.is_terminal:
            async for lines in _replay(build_id, last):
                last = lines[-1]["n"]
                yield {"kind": "log", "lines": lines}
            yield {"kind": "status", **status_payload(build)}
            return
        async for event in listen(layer, channel, keepalive=keepalive, check_every=CHECK_EVERY):
            if event["kind"] == "keepalive":
                yield event
                continue
            if event["kind"] == "log":
                lines = [line for line in event["lines"] if line["n"] > last]
                if lines and lines[0]["n"] != last + 1:  # a gap: fill it from the database
                    async for stored in _replay(build_id, last):
                        last = stored[-1]["n"]
                        yield {"kind": "log", "lines": stored}
                    lines = [line for line in lines if line["n"] > last]
                if lines:
                    last = lines[-1]["n"]
                    yield {"kind": "log", "lines": lines}
                continue
            # A status change (or a periodic check): trust the row, not the message.
            build = await Build.objects.aget(pk=build_id)
            async for lines in _replay(build_id, last):
                last = lines[-1]["n"]
                yield {"kind": "log", "lines": lines}
            if event["kind"] == "status" or build.is_terminal:
                yield {"kind": "status", **status_payload(build)}
            if build.is_terminal:
                return
    finally:
        await layer.group_discard(group, channel)
