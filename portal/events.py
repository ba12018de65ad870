"""Live events over the Channels layer (Redis): publish from sync code, follow from async.

A group per object (``build-12``, ``session-7``); each message is
``{"type": "event.message", "event": {...}}``. Consumers replay what the database holds
first, then follow the group, dropping anything they already sent.

The layer is a convenience, the database the truth: a follower outlives channel-layer
errors and Redis restarts. ``listen`` keeps ONE receiving task per follower that puts
messages on a queue (a channels_redis ``receive`` is never cancelled by a timeout: a
cancelled ``BZPOPMIN`` leaves redis-py to drop the connection mid-reply); when the layer
fails, that task reconnects with back-off and re-subscribes (a restarted Redis has
forgotten the groups), and meanwhile the follower is told to re-read the database often.
``keep_following`` restarts a follower that fails anyway, from where it was, and ends the
stream with one ``failed`` item (``STREAM_UNAVAILABLE``) only when that keeps failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

STREAM_UNAVAILABLE = "STREAM_UNAVAILABLE"
QUEUE_SIZE = 1000  # messages held for a follower that reads slowly; past this, re-read the rows
RETRY_MIN = 0.05  # seconds before the first reconnect; doubles up to BINDERY_STREAM_RETRY_MAX
RESTARTS = 3  # failures of a follower in a row before its stream ends
RESTART_WINDOW = 60.0  # seconds a follower must run for its failure not to count as "in a row"


def _describe(exc: BaseException) -> str:
    """``redis.exceptions.TimeoutError: Timeout reading from …``: which TimeoutError it is."""
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}: {exc}"


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


async def subscribe(
    layer: Any, channel: str, groups: Iterable[str], *, quiet: bool = False
) -> bool:
    """Add ``channel`` to ``groups``; False (logged unless ``quiet``) when the layer is
    unreachable, in which case ``listen`` keeps trying and the follower reads the database
    meanwhile."""
    try:
        for group in groups:
            await layer.group_add(group, channel)
    except Exception as exc:
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "could not subscribe %s to %s: %s", channel, list(groups), _describe(exc))
        return False
    return True


async def unsubscribe(layer: Any, channel: str, groups: Iterable[str]) -> None:
    """Best effort: an unreachable layer forgets the channel when the group key expires."""
    for group in groups:
        try:
            await layer.group_discard(group, channel)
        except Exception as exc:
            log.info("could not unsubscribe %s from %s: %s", channel, group, _describe(exc))
            return


@dataclass
class _Link:
    """What the receiving task tells its follower besides messages."""

    down: bool = False
    overflowed: bool = False


_DOWN = {"kind": "_down"}  # the layer failed: re-read the database, then poll it
_UP = {"kind": "_up"}  # the layer is back: re-read once (publishes in between were lost)


async def _receive_into(
    layer: Any, channel: str, groups: list[str], queue: asyncio.Queue[dict[str, Any]], link: _Link
) -> None:
    """Receive ``channel`` forever into ``queue``. Runs as one task per follower and ends
    only by cancellation (when the follower stops)."""
    delay = RETRY_MIN
    retry_max = max(settings.BINDERY_STREAM_RETRY_MAX, RETRY_MIN)

    def tell(item: dict[str, Any]) -> None:
        if queue.full():
            link.overflowed = True
        else:
            queue.put_nowait(item)

    while True:
        if link.down:
            # Back-off between attempts, with jitter so that many followers do not
            # reconnect in step after a restart. Not a synchronisation: nothing waits on it.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, retry_max)
            if not await subscribe(layer, channel, groups, quiet=True):
                continue
            link.down = False
            log.info("channel layer back for %s", channel)
            tell(_UP)
        try:
            message = await layer.receive(channel)
        except Exception as exc:  # redis.exceptions.TimeoutError/ConnectionError, and more
            if not link.down:
                log.warning("channel layer receive failed for %s: %s", channel, _describe(exc))
            link.down = True
            tell(_DOWN)
            continue
        delay = RETRY_MIN
        event = message.get("event") if isinstance(message, dict) else None
        if isinstance(event, dict):
            tell(event)


async def listen(
    layer: Any,
    channel: str,
    *,
    keepalive: float | None,
    check_every: float,
    groups: Iterable[str] = (),
    subscribed: bool = True,
) -> AsyncGenerator[dict[str, Any], None]:
    """The events arriving on ``channel``, forever; never raises because of the layer.

    In silences it also yields ``{"kind": "keepalive"}`` at least every ``keepalive``
    seconds (when given; ``BINDERY_STREAM_KEEPALIVE`` caps it) and ``{"kind": "check"}``
    every ``check_every`` seconds, so that a follower re-reads the database in case a
    publish was lost. While the layer is failing, checks come at once and then every
    ``BINDERY_STREAM_POLL_EVERY`` seconds, and ``groups`` are subscribed again on
    reconnection. The caller subscribes ``channel`` to ``groups`` first (``subscribe``,
    whose answer is ``subscribed``: when False, the subscription is retried at once) and
    unsubscribes after.
    """
    if keepalive:
        keepalive = min(keepalive, settings.BINDERY_STREAM_KEEPALIVE)
    poll_every = min(settings.BINDERY_STREAM_POLL_EVERY, check_every)
    members_of = list(groups)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
    link = _Link(down=not subscribed)

    def start_receiver() -> asyncio.Task[None]:
        return asyncio.create_task(
            _receive_into(layer, channel, members_of, queue, link), name=f"receive-{channel}"
        )

    receiver = start_receiver()
    loop = asyncio.get_running_loop()
    inf = float("inf")
    next_check = loop.time() + (0 if link.down else check_every)
    next_keepalive = loop.time() + keepalive if keepalive else inf
    try:
        while True:
            if receiver.done():  # it ends only by cancellation; never follow without it
                log.error("receiving task for %s ended: %r", channel, receiver.exception())
                link.down = True
                next_check = min(next_check, loop.time())
                receiver = start_receiver()
            item: dict[str, Any] | None = None
            try:
                # Waiting on our own queue is safe to time out; the receive goes on.
                async with asyncio.timeout(max(0.0, min(next_check, next_keepalive) - loop.time())):
                    item = await queue.get()
            except TimeoutError:
                pass
            now = loop.time()
            if item is _DOWN:
                next_check = min(next_check, now)
            elif item is _UP:
                next_check = now
            elif item is not None:
                yield item
                now = loop.time()
                next_keepalive = now + keepalive if keepalive else inf
            if link.overflowed:
                link.overflowed = False
                next_check = now
            if now >= next_keepalive:
                yield {"kind": "keepalive"}
                now = loop.time()
                next_keepalive = now + keepalive if keepalive else inf
            if now >= next_check:
                yield {"kind": "check"}
                next_check = loop.time() + (poll_every if link.down else check_every)
    finally:
        _detach(receiver)


_DETACHED: set[asyncio.Task[None]] = set()


def _detach(task: asyncio.Task[None]) -> None:
    """Cancel a receiving task without waiting for it. A channels_redis receive in the
    middle of its BZPOPMIN may only see the cancellation once that read returns (seen: up
    to the socket timeout); the follower's stream must close at once all the same."""

    def forget(done: asyncio.Task[None]) -> None:
        _DETACHED.discard(done)
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.warning("receiving task ended with %s", _describe(error))

    task.cancel()
    _DETACHED.add(task)  # a strong reference until it is done
    task.add_done_callback(forget)


def stream_unavailable() -> dict[str, Any]:
    """The last item of a stream that cannot go on."""
    return {
        "kind": "failed",
        "error": STREAM_UNAVAILABLE,
        "detail": "The live stream is unavailable; reconnect to resume.",
    }


async def keep_following(
    start: Callable[[], AsyncGenerator[dict[str, Any], None]], *, name: str
) -> AsyncGenerator[dict[str, Any], None]:
    """Relay ``start()``'s items; when it raises (the database gone, a bug), start it again
    — ``start`` resumes from what was already yielded — and after ``RESTARTS`` failures in a
    row, end with ``stream_unavailable()``."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            async with contextlib.aclosing(start()) as items:
                async for item in items:
                    yield item
            return
        except Exception:
            # "In a row": a follower that ran for a while before failing starts the count again.
            failures = 1 if loop.time() - started > RESTART_WINDOW else failures + 1
            log.exception("stream %s failed (%s in a row)", name, failures)
            if failures >= RESTARTS:
                yield stream_unavailable()
                return
        await asyncio.sleep(RETRY_MIN * 10 * 2**failures)  # back-off before restarting
