"""Websocket ``/ws/launches/<id>/``: a launch's build lines and steps, replayed then live."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.sessions import selectors
from apps.sessions.streams import follow_session
from portal.errors import NotFound


def _owner(scope: dict[str, Any]) -> str:
    session = scope.get("session")
    return str(session.get("bindery_anonymous_owner", "")) if session is not None else ""


class LaunchConsumer(AsyncJsonWebsocketConsumer):
    task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        session_id = int(self.scope["url_route"]["kwargs"]["session_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode())

        def number(name: str) -> int:
            try:
                return max(0, int(query.get(name, ["0"])[0]))
            except ValueError:
                return 0

        try:
            owner = await sync_to_async(_owner)(self.scope)
            await sync_to_async(selectors.get_session_for_user)(
                self.scope["user"], session_id, owner
            )
        except NotFound:
            await self.close(code=4404)
            return
        await self.accept()
        self.task = asyncio.create_task(
            self._relay(session_id, number("after_line"), number("after_event"))
        )

    async def _relay(self, session_id: int, after_line: int, after_event: int) -> None:
        async for item in follow_session(session_id, after_line, after_event):
            await self.send_json(item)
        await self.close(code=1000)

    async def disconnect(self, code: int) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""
