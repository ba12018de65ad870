"""A websocket that relays one async stream of events to the client, then closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class RelayConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses authorize in ``connect`` and then call ``relay(stream)``."""

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
            async for event in stream:
                await self.send_json(event)
            await self.close(code=1000)

        self.task = asyncio.create_task(pump())

    async def disconnect(self, code: int) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""
