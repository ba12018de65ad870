"""A websocket that relays one async stream of events to the client, then closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.events import STREAM_UNAVAILABLE, stream_unavailable

log = logging.getLogger(__name__)

# Closed because the stream cannot go on (after a ``failed`` item, STREAM_UNAVAILABLE):
# 1011 is "server error", so clients reconnect and resume, unlike after 1000.
CLOSE_UNAVAILABLE = 1011


class RelayConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses authorize in ``connect`` and then call ``relay(stream)``."""

    # No channel of its own on the layer: the relayed stream follows the layer itself and
    # survives it failing (portal.events.listen), whereas Channels' receive for the
    # consumer's channel would raise out of the consumer on the first Redis error and drop
    # the socket. Nothing sends to these consumers' channels.
    channel_layer_alias = None
    task: asyncio.Task[None] | None = None

    def query_int(self, name: str) -> int:
        """A non-negative integer query parameter (0 when absent or malformed)."""
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            return max(0, int(query.get(name, ["0"])[0]))
        except ValueError:
            return 0

    async def relay(self, stream: AsyncIterator[dict[str, Any]]) -> None:
        await self.accept()

        async def pump() -> None:
            code = 1000
            try:
                async for event in stream:
                    await self.send_json(event)
                    if event.get("error") == STREAM_UNAVAILABLE:
                        code = CLOSE_UNAVAILABLE
            except Exception:  # never leave the socket open and silent
                log.exception("websocket stream failed")
                code = CLOSE_UNAVAILABLE
                with contextlib.suppress(Exception):
                    await self.send_json(stream_unavailable())
            await self.close(code=code)

        self.task = asyncio.create_task(pump())

    async def disconnect(self, code: int) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""
