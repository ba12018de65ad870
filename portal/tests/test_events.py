"""portal.events over the real channel layer (Redis): publish, and listen with keepalives."""

from __future__ import annotations

from channels.layers import get_channel_layer

from portal.events import listen


async def test_listen_fills_silences_with_keepalives_and_checks():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    stream = listen(layer, channel, keepalive=0.05, check_every=0.1)
    kinds = [(await anext(stream))["kind"] for _ in range(6)]
    # silences are filled with both (their exact order depends on the machine's load)
    assert set(kinds) == {"keepalive", "check"}, kinds
    await layer.send(channel, {"type": "event.message", "event": {"kind": "log", "n": 1}})
    event = await anext(stream)
    while event["kind"] in ("keepalive", "check"):  # silences before the send arrived
        event = await anext(stream)
    assert event == {"kind": "log", "n": 1}


async def test_group_publish_reaches_a_listener():
    from asgiref.sync import sync_to_async

    from portal.events import publish

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("test-group", channel)
    await sync_to_async(publish)("test-group", {"kind": "status", "id": 7})
    stream = listen(layer, channel, keepalive=None, check_every=5)
    assert await anext(stream) == {"kind": "status", "id": 7}
    await layer.group_discard("test-group", channel)
