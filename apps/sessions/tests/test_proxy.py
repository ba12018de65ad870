"""The hub's proxy as browsers meet it: through its public port, a kernel websocket keeps
the subprotocol JupyterLab asks for, and a streamed response arrives event by event.

The Python (PyPI) configurable-http-proxy fails both: it answers the handshake without
``Sec-WebSocket-Protocol`` (the browser then drops the socket and JupyterLab reconnects the
kernel) and sends a server-sent event stream only once it ends. ``bin/setup`` installs the
npm one under ``proxy/`` and the generated config runs it.
"""

from __future__ import annotations

import json
from typing import Any

import requests
import websocket

from apps.sessions.hub import HubClient
from apps.sessions.tests.conftest import Hub, Running, wait_for
from portal.hubconfig import local_proxy_bin, python_proxy

KERNEL_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"


def test_the_hub_runs_the_npm_proxy_that_bin_setup_installs(hub: Hub) -> None:
    config = (hub.dirs["hub"] / "jupyterhub_config.py").read_text()
    installed = local_proxy_bin() / "configurable-http-proxy"
    assert installed.exists(), "bin/setup did not install the npm proxy under proxy/"
    assert f"c.ConfigurableHTTPProxy.command = [{str(installed)!r}]" in config
    assert str(python_proxy()) not in config
    pid = int((hub.dirs["hub"] / "proxy.pid").read_text())
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    assert argv[0].endswith(b"node") and argv[1] == str(installed).encode()


def test_kernel_websocket_through_the_proxy_keeps_its_subprotocol(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    launch = running_server.launch
    token, token_id = hub_client.create_server_token(launch.user, launch.server, 300)
    auth = {"Authorization": f"token {token}"}
    base = f"{hub.public_url}/user/{launch.user}/{launch.server}"
    kernel = requests.post(
        f"{base}/api/kernels", headers=auth, json={"name": "python3"}, timeout=60
    )
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    try:
        ws = websocket.create_connection(
            base.replace("http://", "ws://", 1) + f"/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {token}"],
            subprotocols=[KERNEL_SUBPROTOCOL],
            timeout=60,
        )
        try:
            headers = ws.getheaders() or {}
            assert ws.getstatus() == 101
            assert headers.get("sec-websocket-protocol") == KERNEL_SUBPROTOCOL
            assert ws.getsubprotocol() == KERNEL_SUBPROTOCOL
        finally:
            ws.close()
    finally:
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=auth, timeout=60)
        hub_client.revoke_token(launch.user, token_id)


def test_progress_stream_through_the_proxy_arrives_event_by_event(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    """The hub's /progress for a starting server, read through the proxy's public port: the
    first event arrives while the server is still starting, i.e. before the stream can end
    (a proxy that holds the response back delivers everything once the server is ready)."""
    launch = make_launch("grace", "stream-1")
    hub_client.ensure_user("grace")
    hub_client.start_server("grace", "stream-1", launch.user_options)
    try:
        url = f"{hub.public_url}/hub/api/users/grace/servers/stream-1/progress"
        events: list[dict[str, Any]] = []
        status_at_first_event = None
        with requests.get(
            url,
            headers={"Authorization": f"token {hub.token}", "Accept": "text/event-stream"},
            stream=True,
            timeout=(5, 120),
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines(chunk_size=None, decode_unicode=True):
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line[5:]))
                if status_at_first_event is None:
                    status_at_first_event = hub_client.server_status("grace", "stream-1")
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
        assert events and events[-1].get("ready"), events
        assert len(events) > 1
        assert status_at_first_event == "pending"  # the stream was still open, mid-start
    finally:
        hub_client.stop_server("grace", "stream-1")
        wait_for(lambda: hub_client.server_status("grace", "stream-1") == "stopped", 60, "the stop")
