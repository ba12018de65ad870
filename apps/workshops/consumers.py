"""Websocket ``/ws/workshops/<id>/``: the workshop's roster, live, for its instructors."""

from __future__ import annotations

from channels.db import database_sync_to_async

from apps.workshops import selectors
from apps.workshops.streams import follow_roster
from portal.consumers import RelayConsumer
from portal.errors import NotFound


class RosterConsumer(RelayConsumer):
    async def connect(self) -> None:
        workshop_id = int(self.scope["url_route"]["kwargs"]["workshop_id"])
        try:
            await database_sync_to_async(selectors.get_workshop_for_instructor)(
                self.scope["user"], workshop_id
            )
        except NotFound:
            await self.close(code=4404)
            return
        await self.relay(follow_roster(workshop_id))
