"""Live streams outlive the channel layer, over the real layer and a real Redis.

A quiet period longer than Redis's read timeout and the layer's own BZPOPMIN timeout
(both set small here, not waited out), and Redis restarted in the middle (the embedded
server stopped and started on the same socket; against a shared server, the layer's
connections killed and its keys dropped): the build event stream, the mybinder ``/build/``
stream and both websockets keep sending keepalives and end with the final event written
afterwards. A stream that cannot go on ends with ``STREAM_UNAVAILABLE``, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import connections, transaction
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.accounts.tests.factories import UserFactory
from apps.builds import services as builds
from apps.builds.logs import BuildLog
from apps.builds.models import Build, BuildLogLine
from apps.builds.routing import websocket_urlpatterns as build_routes
from apps.sessions.events import add_event
from apps.sessions.models import Session
from apps.sessions.mybinder import mybinder_events
from apps.sessions.routing import websocket_urlpatterns as launch_routes
from portal import embedded_redis

pytestmark = pytest.mark.django_db(transaction=True)

GUARD = 15.0  # seconds before a stuck read fails the test (a bound, not a synchronisation)
LAYER_NAME = f"bindery-test-layer-{os.getpid()}"  # CLIENT SETNAME of the layer's connections
LAYER_PREFIX = f"bindery-test-{os.getpid()}:asgi"


# --- Redis ------------------------------------------------------------------------------


def _client() -> redis.Redis:
    # No retries: redis-py's default (back-off from 1 s) would add seconds to a shutdown.
    options: dict[str, Any] = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
    if django_settings.REDIS_EMBEDDED:
        return redis.Redis(unix_socket_path=str(django_settings.REDIS_SOCKET), **options)
    return redis.Redis.from_url(django_settings.REDIS_URL, **options)


def _start_embedded(socket: Path) -> subprocess.Popen[str]:
    """redis-server on ``socket`` as the embedded one runs, returned once it says it is
    ready (its own log line, rather than polling the socket)."""
    socket.unlink(missing_ok=True)
    command = [*embedded_redis.server_command(socket), "--loglevel", "notice"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ready to accept connections" in line:
            break
    else:
        raise RuntimeError(f"redis-server exited with {proc.wait()}")
    drain = threading.Thread(target=proc.stdout.read, daemon=True)  # never block its log
    drain.start()
    return proc


@pytest.fixture(scope="session")
def _restarted_servers() -> Iterator[list[Any]]:
    """Embedded servers started by restarts; they serve the rest of the session."""
    started: list[Any] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def restart_redis(_restarted_servers: list[Any]) -> Any:
    def restart() -> None:
        client = _client()
        if django_settings.REDIS_EMBEDDED:
            # A real restart: the server goes (with every group and queued message, it keeps
            # nothing on disk) and a new one answers on the same socket.
            pid = client.info("server")["process_id"]
            client.shutdown(nosave=True)
            with contextlib.suppress(ChildProcessError):  # ours when conftest started it
                os.waitpid(pid, 0)
            _restarted_servers.append(_start_embedded(django_settings.REDIS_SOCKET))
            assert client.info("server")["process_id"] != pid
        else:
            # A shared server (CI) cannot be restarted: break what a restart breaks for us —
            # every connection of the layer, and what the layer stored.
            killed = [c for c in client.client_list() if c.get("name") == LAYER_NAME]
            for connection in killed:
                client.client_kill_filter(_id=connection["id"])
            assert killed, "the layer had no connection to break"
            for key in client.scan_iter(match=f"{LAYER_PREFIX}*"):
                client.delete(key)

    return sync_to_async(restart, thread_sensitive=False)


def bzpopmin_calls() -> int:
    stats = _client().info("commandstats")
    return int(stats.get("cmdstat_bzpopmin", {}).get("calls", 0))


# --- Stream settings and the log of the followers ----------------------------------------


@pytest.fixture
def layer(settings: Any) -> Any:
    """Small stream timings; ``layer(socket_timeout=..., brpop_timeout=...)`` configures
    the real channels_redis layer every stream and publish of the test uses."""
    settings.BINDERY_STREAM_KEEPALIVE = 0.1
    # Long: what arrives while the layer works must come over it, not from a periodic check.
    settings.BINDERY_STREAM_CHECK_EVERY = 60.0
    settings.BINDERY_STREAM_POLL_EVERY = 0.2
    settings.BINDERY_STREAM_RETRY_MAX = 0.2

    def configure(
        *, socket_timeout: float | None = None, brpop_timeout: float | None = None
    ) -> Any:
        layers = copy.deepcopy(settings.CHANNEL_LAYERS)
        config = layers["default"]["CONFIG"]
        config["prefix"] = LAYER_PREFIX
        config["hosts"][0]["client_name"] = LAYER_NAME
        if socket_timeout is not None:  # else the settings' (above the BZPOPMIN timeout)
            config["hosts"][0]["socket_timeout"] = socket_timeout
        settings.CHANNEL_LAYERS = layers  # channels drops its cached layer on this change
        configured = get_channel_layer()
        assert configured is not None
        if brpop_timeout is not None:  # channels_redis's BZPOPMIN timeout (5 s)
            configured.brpop_timeout = brpop_timeout
        return configured

    return configure


class Watch(logging.Handler):
    """The followers' log lines, and a way to await one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.loop.call_soon_threadsafe(self.changed.set)

    def count(self, pattern: str) -> int:
        return sum(bool(re.search(pattern, line)) for line in self.lines)

    async def until(self, pattern: str, n: int = 1) -> None:
        async with asyncio.timeout(GUARD):
            while self.count(pattern) < n:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def watch() -> AsyncIterator[Watch]:
    handler = Watch()
    logger = logging.getLogger("portal.events")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


READ_FAILED = r"receive failed .*redis\.exceptions\.TimeoutError"
LAYER_FAILED = r"receive failed"
LAYER_BACK = r"channel layer back"


# --- Rows, written the way the worker writes them ----------------------------------------


async def as_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` as the Celery worker runs writes: in a thread of its own, publishing
    through an event loop of its own (not the test's, which the followers use)."""

    def run() -> Any:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def running_build(lines: int = 0) -> Build:
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key=f"k-{timezone.now().timestamp()}",
        status="running", phase="building",
    )  # fmt: skip
    if lines:
        log = BuildLog(build)
        for n in range(1, lines + 1):
            log(f"line {n}")
        log.close()
    build.refresh_from_db()
    return build


def write_lines(build_id: int, texts: list[str]) -> None:
    log = BuildLog(Build.objects.get(pk=build_id))
    for text in texts:
        log(text)
    log.close()


def finish_build(build_id: int, texts: list[str]) -> None:
    write_lines(build_id, texts)
    builds._set_final(build_id, Build.Status.READY, "", "")


def launching_session() -> Session:
    user: Any = UserFactory()
    build = running_build()
    Build.objects.filter(pk=build.pk).update(status="ready", phase="built")
    session = Session.objects.create(user=user, build=build, hub_user=user.hub_name,
                                     provider="git", spec="x", status="launching")  # fmt: skip
    add_event(session, "launching", "Starting the server.")
    return session


def mark_ready(session_id: int) -> None:
    """What sessions.services.launch does once the hub says the server is up."""
    with transaction.atomic():
        row = Session.objects.select_for_update().get(pk=session_id)
        row.url = f"http://127.0.0.1:8001/user/x/{session_id}/"
        row.status = Session.Status.READY
        row.ready_at = row.last_activity = timezone.now()
        row.save(update_fields=["url", "status", "ready_at", "last_activity"])
        add_event(row, "ready", f"Server ready at {row.url}")


# --- Reading streams ---------------------------------------------------------------------


class SSE:
    """An event stream read chunk by chunk: ``:keepalive`` comments and parsed events."""

    def __init__(self, chunks: AsyncIterator[Any]):
        self.chunks = aiter(chunks)
        self.keepalives = 0
        self.events: list[tuple[str, dict[str, Any], str]] = []  # (event, data, id)
        self.ended = False

    async def next(self) -> str:
        """One chunk; '' at the end."""
        try:
            async with asyncio.timeout(GUARD):
                chunk = await anext(self.chunks)
        except StopAsyncIteration:
            self.ended = True
            return ""
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        for block in filter(None, text.split("\n\n")):
            if block == ":keepalive":
                self.keepalives += 1
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            self.events.append(
                (fields.get("event", ""), json.loads(fields["data"]), fields.get("id", ""))
            )
        return text

    async def until(self, done: Any) -> None:
        while not done():
            assert await self.next(), "the stream ended early"

    async def to_end(self) -> None:
        while await self.next():
            pass

    def failures(self) -> list[dict[str, Any]]:
        """``failed`` events of the build stream, ``failed`` phases of mybinder's."""
        return [data for kind, data, _ in self.events if "failed" in (kind, data.get("phase"))]

    def ids(self) -> list[int]:
        return [int(i) for _, _, i in self.events if i]


async def build_event_stream(async_client: Any, build: Build) -> SSE:
    from apps.accounts.services import create_api_token

    user: Any = await sync_to_async(UserFactory)()
    issued = await sync_to_async(create_api_token)(user, "sse")
    headers = {"Authorization": f"token {issued.secret}", "Accept": "text/event-stream"}
    response = await async_client.get(f"/api/v1/builds/{build.pk}/events/", headers=headers)
    assert response.status_code == 200
    return SSE(response.streaming_content)


# --- Quiet for longer than every timeout -------------------------------------------------

QUIET = [
    # redis-py gives up reading after 0.3 s, long before the server answers BZPOPMIN (5 s):
    # redis.exceptions.TimeoutError in the middle of a receive, the bug this file is about.
    pytest.param(0.3, None, id="redis-read-timeout"),
    # The layer's BZPOPMIN comes back empty every 0.2 s and is asked again, for a while.
    pytest.param(2.0, 0.2, id="layer-timeout"),
]


async def quiet_until_timeouts(stream: SSE, watch: Watch, brpop_timeout: float | None) -> None:
    """Read keepalives until the quiet has outlasted the timeouts, seen on the server or in
    the followers' log, and at least a second (10 keepalives) has passed."""
    before = await sync_to_async(bzpopmin_calls)()

    async def outlasted() -> bool:
        if brpop_timeout is None:
            return watch.count(READ_FAILED) >= 2
        return await sync_to_async(bzpopmin_calls)() - before >= 3

    while stream.keepalives < 10 or not await outlasted():
        assert await stream.next(), "the stream ended early"
        assert stream.keepalives < 300, "the timeouts never happened"
    assert not stream.failures()


@pytest.mark.parametrize(("socket_timeout", "brpop_timeout"), QUIET)
async def test_quiet_build_event_stream_keeps_alive_then_ends(
    async_client, layer, watch, socket_timeout, brpop_timeout
):
    layer(socket_timeout=socket_timeout, brpop_timeout=brpop_timeout)
    build = await as_worker(running_build, 1)
    stream = await build_event_stream(async_client, build)
    await stream.until(lambda: stream.ids() == [1])

    await quiet_until_timeouts(stream, watch, brpop_timeout)
    quiet_keepalives = stream.keepalives
    await as_worker(finish_build, build.pk, ["line 2", "line 3"])
    await stream.to_end()

    assert quiet_keepalives >= 10
    assert stream.ids() == [1, 2, 3]
    kind, data, _ = stream.events[-1]
    assert (kind, data["status"]) == ("status", "ready")
    assert not stream.failures()
    if brpop_timeout is None:
        assert watch.count(READ_FAILED) >= 2  # the quiet really broke the layer's reads


@pytest.mark.parametrize(("socket_timeout", "brpop_timeout"), QUIET)
async def test_quiet_launch_stream_keeps_alive_then_ready(
    layer, watch, socket_timeout, brpop_timeout
):
    layer(socket_timeout=socket_timeout, brpop_timeout=brpop_timeout)
    session = await as_worker(launching_session)
    stream = SSE(mybinder_events(session))  # what GET /build/<provider>/<spec> sends
    await stream.until(lambda: stream.keepalives > 0)

    await quiet_until_timeouts(stream, watch, brpop_timeout)
    await as_worker(mark_ready, session.pk)
    await stream.to_end()

    phases = [data["phase"] for _, data, _ in stream.events]
    assert phases == ["launching", "ready"]
    assert stream.events[-1][1]["url"].endswith(f"/{session.pk}/")
    assert stream.keepalives >= 10


# --- Redis restarted in the middle -------------------------------------------------------

# Short, and far apart: a receive cancelled when its follower ends may finish its read first.
RESTART = {"socket_timeout": 3.0, "brpop_timeout": 1.0}


async def test_build_event_stream_survives_a_redis_restart(
    async_client, layer, watch, restart_redis
):
    layer(**RESTART)
    build = await as_worker(running_build, 2)
    stream = await build_event_stream(async_client, build)
    await stream.until(lambda: stream.ids() == [1, 2] and stream.keepalives > 0)
    await as_worker(write_lines, build.pk, ["line 3"])
    await stream.until(lambda: stream.ids() == [1, 2, 3])  # live, over the layer

    await restart_redis()
    before = stream.keepalives
    await stream.until(lambda: watch.count(LAYER_BACK) >= 1)
    during = stream.keepalives - before
    await as_worker(finish_build, build.pk, ["line 4", "line 5"])
    await stream.to_end()

    assert watch.count(LAYER_FAILED) >= 1  # the restart really broke the layer's receive
    assert during >= 1
    assert stream.ids() == [1, 2, 3, 4, 5]
    kind, data, _ = stream.events[-1]
    assert (kind, data["status"]) == ("status", "ready")
    assert not stream.failures()


async def test_launch_stream_survives_a_redis_restart(layer, watch, restart_redis):
    layer(**RESTART)
    session = await as_worker(launching_session)
    stream = SSE(mybinder_events(session))
    await stream.until(lambda: stream.keepalives > 0)

    await restart_redis()
    await stream.until(lambda: watch.count(LAYER_BACK) >= 1)
    await as_worker(mark_ready, session.pk)
    await stream.to_end()

    assert watch.count(LAYER_FAILED) >= 1
    assert [data["phase"] for _, data, _ in stream.events] == ["launching", "ready"]


# --- The websockets ----------------------------------------------------------------------


async def ws_connect(routes: Any, path: str, user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(routes), path)
    communicator.scope["user"] = user
    communicator.scope["session"] = {}
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def ws_receive(communicator: WebsocketCommunicator) -> dict[str, Any] | int:
    """The next item, or the close code."""
    message = await communicator.receive_output(timeout=GUARD)
    if message["type"] == "websocket.close":
        return int(message.get("code", 1000))
    return json.loads(message["text"])


async def test_build_websocket_survives_a_redis_restart(layer, watch, restart_redis):
    layer(**RESTART)
    user = await sync_to_async(UserFactory)()
    build = await as_worker(running_build, 2)
    communicator = await ws_connect(build_routes, f"/ws/builds/{build.pk}/", user)
    items = [await ws_receive(communicator), await ws_receive(communicator)]
    await as_worker(write_lines, build.pk, ["line 3"])
    items.append(await ws_receive(communicator))  # live: the follower is on the layer

    await restart_redis()
    await watch.until(LAYER_BACK)
    await as_worker(finish_build, build.pk, ["line 4", "line 5"])
    while isinstance(item := await ws_receive(communicator), dict):
        items.append(item)

    assert item == 1000
    assert watch.count(LAYER_FAILED) >= 1
    dicts = [i for i in items if isinstance(i, dict)]
    lines = [line["n"] for i in dicts if i["kind"] == "log" for line in i["lines"]]
    assert lines == [1, 2, 3, 4, 5]
    assert (dicts[-1]["kind"], dicts[-1]["status"]) == ("status", "ready")


async def test_launch_websocket_survives_a_redis_restart(layer, watch, restart_redis):
    layer(**RESTART)
    session = await as_worker(launching_session)
    user = await sync_to_async(lambda: session.user)()
    communicator = await ws_connect(launch_routes, f"/ws/launches/{session.pk}/", user)
    items = [await ws_receive(communicator), await ws_receive(communicator)]  # status, event
    await as_worker(write_lines, session.build_id, ["a late build line"])
    items.append(await ws_receive(communicator))  # live: the follower is on the layer

    await restart_redis()
    await watch.until(LAYER_BACK)
    await as_worker(mark_ready, session.pk)
    while isinstance(item := await ws_receive(communicator), dict):
        items.append(item)

    assert item == 1000
    seen = [(i["kind"], i.get("phase") or i.get("status")) for i in items if isinstance(i, dict)]
    assert seen == [
        ("status", "launching"),
        ("event", "launching"),
        ("log", "building"),
        ("event", "ready"),
        ("status", "ready"),
    ]


async def test_websocket_that_cannot_go_on_ends_with_stream_unavailable(layer, watch):
    layer(**RESTART)
    user = await sync_to_async(UserFactory)()
    build = await as_worker(running_build, 1)
    communicator = await ws_connect(build_routes, f"/ws/builds/{build.pk}/", user)
    items = [await ws_receive(communicator), await ws_receive(communicator)]

    def remove_and_announce() -> None:  # the row goes; the follower can no longer read it
        BuildLogLine.objects.filter(build_id=build.pk).delete()
        Build.objects.filter(pk=build.pk).delete()
        from apps.builds.logs import publish_status

        publish_status(build)

    await as_worker(remove_and_announce)
    while isinstance(item := await ws_receive(communicator), dict):
        items.append(item)

    assert item == 1011  # "server error": clients reconnect and resume
    last = items[-1]
    assert isinstance(last, dict)
    assert (last["kind"], last["error"]) == ("failed", "STREAM_UNAVAILABLE")
