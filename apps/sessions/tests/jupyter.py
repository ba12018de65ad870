"""Talk to a running single-user server as a browser would: the REST API and a kernel over
its websocket (the Jupyter messaging protocol), with a server-scoped token."""

from __future__ import annotations

import json
import uuid
from typing import Any

import requests
import websocket


def run_code(base: str, token: str, code: str, timeout: float = 60) -> tuple[str, str]:
    """Start a kernel in the server at ``base``, run ``code``, return (status, stdout)."""
    auth = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"},
                           timeout=timeout)  # fmt: skip
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    ws_url = base.replace("http://", "ws://", 1) + f"/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"],
                                     timeout=timeout)  # fmt: skip
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                   "username": "", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {},
        "content": {"code": code, "silent": False, "allow_stdin": False},
        "channel": "shell", "buffers": [],
    }))  # fmt: skip
    output: list[str] = []
    status = None
    idle = False  # iopub's "idle" for the request: all its output has been sent
    try:
        while status is None or not idle:
            message: dict[str, Any] = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                output.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                output.append("\n".join(message["content"]["traceback"]))
            elif message["msg_type"] == "execute_reply":
                status = message["content"]["status"]
            elif message["msg_type"] == "status":
                idle = message["content"].get("execution_state") == "idle"
    finally:
        ws.close()
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=auth, timeout=timeout)
    return status, "".join(output)
