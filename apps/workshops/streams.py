"""Follow a workshop's roster: the whole roster on connect, again on every roster message
of the group ``workshop-<id>`` (joins, stops, closing: ``services._publish``) and every
event of a seat's session (``apps.sessions.events.add_event``), and every
``BINDERY_STREAM_CHECK_EVERY`` seconds for memory and last activity when it changed.

Survives the channel layer failing (``portal.events.listen`` re-reads on its checks) and
the follower failing (``keep_following``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from apps.workshops.presentation import roster_payload
from portal.events import keep_following, listen, subscribe, unsubscribe


def group_for(workshop_id: int) -> str:
    return f"workshop-{workshop_id}"


async def follow_roster(workshop_id: int) -> AsyncIterator[dict[str, Any]]:
    """Yield ``roster`` items (and ``keepalive`` ones in silences); never ends by itself,
    except with a ``failed`` item when it cannot go on."""
    follower = keep_following(lambda: _follow(workshop_id), name=group_for(workshop_id))
    async with aclosing(follower):
        async for item in follower:
            yield item


async def _follow(workshop_id: int) -> AsyncGenerator[dict[str, Any], None]:
    """One follower; a restarted one starts with the whole roster again."""
    layer = get_channel_layer()
    assert layer is not None
    read = database_sync_to_async(roster_payload)
    channel = await layer.new_channel()
    groups = [group_for(workshop_id)]
    subscribed = await subscribe(layer, channel, groups)  # first: nothing falls between
    try:
        last = await read(workshop_id)
        yield last
        events = listen(layer, channel, keepalive=settings.BINDERY_STREAM_KEEPALIVE,
                        check_every=settings.BINDERY_STREAM_CHECK_EVERY, groups=groups,
                        subscribed=subscribed)  # fmt: skip
        async with aclosing(events):
            async for incoming in events:
                if incoming["kind"] == "keepalive":
                    yield incoming
                    continue
                payload = await read(workshop_id)
                # a roster message always redraws; a check or a session's step only when
                # something the instructor sees changed
                if incoming["kind"] == "roster" or payload != last:
                    last = payload
                    yield payload
    finally:
        await unsubscribe(layer, channel, groups)
