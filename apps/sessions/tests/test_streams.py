"""The launch websocket over the real channel layer: build lines and launch steps replayed
in the order they happened, then the final status; other people's sessions refused."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build, BuildLogLine
from apps.sessions.events import add_event
from apps.sessions.models import Session
from apps.sessions.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


def failed_launch(user):
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key="k", status="failed",
    )  # fmt: skip
    session = Session.objects.create(user=user, build=build, hub_user=user.hub_name,
                                     provider="git", spec="x", status="building")  # fmt: skip
    add_event(session, "waiting", "Waiting for the build.")
    for n in (1, 2):
        BuildLogLine.objects.create(build=build, n=n, phase="building", text=f"line {n}")
    add_event(session, "failed", "The build failed: boom")
    Session.objects.filter(pk=session.pk).update(status="failed", error_message="boom")
    return session


async def connect(user, path):
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    communicator.scope["session"] = {}
    return communicator, *(await communicator.connect())


async def test_replays_in_order_then_ends(db):
    user = await sync_to_async(UserFactory)()
    session = await sync_to_async(failed_launch)(user)
    communicator, connected, _ = await connect(user, f"/ws/launches/{session.pk}/")
    assert connected
    items = []
    while True:
        message = await communicator.receive_output(timeout=10)
        if message["type"] == "websocket.close":
            break
        import json

        items.append(json.loads(message["text"]))
    seen = [(i["kind"], i.get("text") or i.get("message") or i.get("status")) for i in items]
    assert seen == [
        ("status", "failed"),
        ("event", "Waiting for the build."),
        ("log", "line 1"),
        ("log", "line 2"),
        ("event", "The build failed: boom"),
        ("status", "failed"),
    ]


async def test_resumes_after_given_numbers(db):
    user = await sync_to_async(UserFactory)()
    session = await sync_to_async(failed_launch)(user)
    communicator, connected, _ = await connect(
        user, f"/ws/launches/{session.pk}/?after_line=1&after_event=1"
    )
    assert connected
    first = await communicator.receive_json_from(timeout=10)
    second = await communicator.receive_json_from(timeout=10)
    third = await communicator.receive_json_from(timeout=10)
    assert (first["kind"], second.get("text"), third.get("message")) == (
        "status", "line 2", "The build failed: boom")  # fmt: skip


async def test_someone_elses_session_is_refused(db):
    owner, other = await sync_to_async(UserFactory)(), await sync_to_async(UserFactory)()
    session = await sync_to_async(failed_launch)(owner)
    _, connected, code = await connect(other, f"/ws/launches/{session.pk}/")
    assert not connected and code == 4404
