"""Websocket ``/ws/launches/<id>/``: a launch's build lines and steps, replayed then live."""

from __future__ import annotations

from channels.db import database_sync_to_async

from apps.sessions import selectors
from apps.sessions.owners import existing_owner
from apps.sessions.streams import follow_session
from portal.consumers import RelayConsumer
from portal.errors import NotFound


class LaunchConsumer(RelayConsumer):
    async def connect(self) -> None:
        session_id = int(self.scope["url_route"]["kwargs"]["session_id"])
        try:
            owner = await database_sync_to_async(existing_owner)(self.scope.get("session"))
            await database_sync_to_async(selectors.get_session_for_user)(
                self.scope["user"], session_id, owner
            )
        except NotFound:
            await self.close(code=4404)
            return
        stream = follow_session(
            session_id, self.query_int("after_line"), self.query_int("after_event")
        )
        await self.relay(stream)
