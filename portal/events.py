"""Live events over the Channels layer (Redis): publish from sync code, follow from async.

A group per object (``build-12``, ``session-7``); each message is
``{"type": "event.message", "event": {...}}``. Consumers replay what the database holds
first, then follow the group, dropping anything they already sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def publish(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to everyone following ``group``. Never raises: the database row and
    log lines are the truth, followers catch up from them."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "event.message", "event": event})
    except Exception as exc:
        log.warning("could not publish to %s: %s", group, exc)


async def listen(
    layer: Any, channel: str, *, keepalive: float | None, check_every: float
) -> AsyncIterator[dict[str, Any]]:
    """The events arriving on ``channel``, forever. In silences it also yields
    ``{"kind": "keepalive"}`` every ``keepalive`` seconds (when given) and
    ``{"kind": "check"}`` every ``check_every`` seconds, so that a follower re-reads the
    database in case a publish was lost."""
    wait = min(keepalive or check_every, check_every)
    quiet = 0.0
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=wait)
        except TimeoutError:
            quiet += wait
            if keepalive:
                yield {"kind": "keepalive"}
            if quiet >= check_every:
                quiet = 0.0
                yield {"kind": "check"}
            continue
        yield message["event"]
