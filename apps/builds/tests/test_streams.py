"""Live logs over the real channel layer (Redis): the websocket and the event stream both
replay stored lines from a given number, then follow new ones, without gaps or repeats."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from apps.builds import services
from apps.builds.logs import BuildLog
from apps.builds.models import Build, BuildLogLine
from apps.builds.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


def make_build(user, repo, lines=0):
    resolved, credential = services.resolve_input(user, repo_url=repo.url, ref="main")
    build = services.request_build(resolved, user, credential=credential).build
    BuildLogLine.objects.bulk_create(
        BuildLogLine(build=build, n=n, phase="building", text=f"line {n}")
        for n in range(1, lines + 1)
    )
    Build.objects.filter(pk=build.pk).update(log_size=lines, status="running", phase="building")
    build.refresh_from_db()
    return build


def write_and_finish(build_id: int, texts: list[str]) -> None:
    build = Build.objects.get(pk=build_id)
    sink = BuildLog(build)
    for text in texts:
        sink(text, phase="building")
    sink.close()
    services._set_final(build_id, Build.Status.READY, "", "")


async def connect(user, path):
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def receive_until_closed(communicator):
    events = []
    while True:
        message = await communicator.receive_output(timeout=10)
        if message["type"] == "websocket.close":
            return events
        import json

        events.append(json.loads(message["text"]))


async def test_websocket_replays_then_follows_until_final(alice, public_repo):
    build = await sync_to_async(make_build)(alice, public_repo, lines=2)
    communicator, connected, _ = await connect(alice, f"/ws/builds/{build.pk}/?after=0")
    assert connected
    first = await communicator.receive_json_from(timeout=10)
    assert first["kind"] == "status" and first["status"] == "running"
    replay = await communicator.receive_json_from(timeout=10)
    assert [line["text"] for line in replay["lines"]] == ["line 1", "line 2"]
    await sync_to_async(write_and_finish)(build.pk, ["line 3", "line 4"])
    events = await receive_until_closed(communicator)
    lines = [line for e in events if e["kind"] == "log" for line in e["lines"]]
    assert [line["n"] for line in lines] == [3, 4]
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "ready"


async def test_websocket_resumes_after_a_given_line(alice, public_repo):
    build = await sync_to_async(make_build)(alice, public_repo, lines=5)
    await sync_to_async(services._set_final)(build.pk, Build.Status.FAILED, "boom", "X")
    communicator, connected, _ = await connect(alice, f"/ws/builds/{build.pk}/?after=3")
    assert connected
    events = await receive_until_closed(communicator)
    lines = [line["n"] for e in events if e["kind"] == "log" for line in e["lines"]]
    assert lines == [4, 5]
    assert events[-1]["status"] == "failed" and events[-1]["error_message"] == "boom"


async def test_websocket_refuses_a_build_you_cannot_see(alice, bob, private_repo, git_host):
    from apps.repos.services import create_credential

    await sync_to_async(create_credential)(
        alice, host=git_host.host, token=git_host.token, username=git_host.username
    )
    build = await sync_to_async(make_build)(alice, private_repo)
    _, connected, code = await connect(bob, f"/ws/builds/{build.pk}/")
    assert not connected
    assert code == 4404


async def test_event_stream_replays_with_ids_and_resumes(async_client, alice, public_repo):
    from apps.accounts.services import create_api_token

    build = await sync_to_async(make_build)(alice, public_repo, lines=3)
    await sync_to_async(services._set_final)(build.pk, Build.Status.READY, "", "")
    issued = await sync_to_async(create_api_token)(alice, "sse")
    headers = {"Authorization": f"token {issued.secret}", "Accept": "text/event-stream"}
    response = await async_client.get(f"/api/v1/builds/{build.pk}/events/", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert "id: 1\nevent: log\n" in body and "id: 3\nevent: log\n" in body
    assert body.rstrip().endswith('"log_size":3}')
    resumed = await async_client.get(
        f"/api/v1/builds/{build.pk}/events/", headers={**headers, "Last-Event-ID": "2"}
    )
    text = b"".join([chunk async for chunk in resumed.streaming_content]).decode()
    assert "id: 3\n" in text and "id: 2\n" not in text and "id: 1\n" not in text


async def test_event_stream_rejects_bad_token(async_client, alice, public_repo):
    build = await sync_to_async(make_build)(alice, public_repo)
    response = await async_client.get(
        f"/api/v1/builds/{build.pk}/events/", headers={"Authorization": "token nope"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "TOKEN_MALFORMED"
