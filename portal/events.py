"""Live events over the Channels layer (Redis): publish from sync code, follow from async.

A group per object (``build-12``, ``session-7``); each message is
``{"type": "event.message", "event": {...}}``. Consumers replay what the database holds
first, then follow the group, dropping anything they already sent.
"""

from __future__ import annotations

import logging
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
