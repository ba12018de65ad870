"""Websocket ``/ws/builds/<id>/?after=N``: replay a build's log from line N, then follow."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.builds import selectors
from apps.builds.streams import follow_build
from portal.errors import NotFound


class BuildLogConsumer(AsyncJsonWebsocketConsumer):
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        build_id = int(self.scope["url_route"]["kwargs"]["build_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            after = 0
        try:
            await sync_to_async(selectors.get_build_for_user)(self.scope["user"], build_id)
        except NotFound:
            await self.close(code=4404)
            return
        await self.accept()
        self.task = asyncio.create_task(self._relay(build_id, after))

    async def _relay(self, build_id: int, after: int) -> None:
        async for event in follow_build(build_id, after):
            await self.send_json(event)
        await self.close(code=1000)

    async def disconnect(self, code: int) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""
