"""Websocket ``/ws/builds/<id>/?after=N``: replay a build's log from line N, then follow."""

from __future__ import annotations

from channels.db import database_sync_to_async

from apps.builds import selectors
from apps.builds.streams import follow_build
from portal.consumers import RelayConsumer
from portal.errors import NotFound


class BuildLogConsumer(RelayConsumer):
    async def connect(self) -> None:
        build_id = int(self.scope["url_route"]["kwargs"]["build_id"])
        try:
            await database_sync_to_async(selectors.get_build_for_user)(self.scope["user"], build_id)
        except NotFound:
            await self.close(code=4404)
            return
        await self.relay(follow_build(build_id, self.query_int("after")))
