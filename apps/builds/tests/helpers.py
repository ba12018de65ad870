"""Test helpers shared by the build tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.builds.backends.base import BuildRequest, BuildResult
from apps.builds.backends.local import LocalBuilder
from apps.repos.types import ResolvedRepo

# A one-package base set: builds with it take well under a second.
SMALL_BASE = ("toolz==1.0.0",)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def envs_beside_the_cache() -> Iterator[Path]:
    """A fresh environments directory inside BINDERY_BUILD_DIR, beside the shared uv cache,
    where the portal keeps its own: the sandboxed uv hardlinks from its cache there.
    Removed afterwards."""
    envs = Path(settings.BINDERY_BUILD_DIR) / unique("test-envs")
    envs.mkdir(parents=True)
    try:
        yield envs
    finally:
        shutil.rmtree(envs, ignore_errors=True)


class Gate:
    """A TCP server on 127.0.0.1 for postBuild scripts to connect to.

    Its accepting a connection tells the test that postBuild is running; the script then
    waits until the test calls ``open()``; the connection reaching end-of-file tells the
    test the script's process is gone.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.released = threading.Event()
        self.arrived = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.arrived.set()
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self.released.wait()
        with contextlib.suppress(OSError):
            conn.sendall(b"go\n")

    @property
    def script(self) -> str:
        return (
            "python -c \"import socket, sys; s = socket.create_connection(('127.0.0.1', "
            f"{self.port})); sys.stdout.write('gate ' + s.recv(16).decode())\"\n"
        )

    def wait_arrival(self) -> socket.socket:
        assert self.arrived.wait(120), "postBuild never reached the gate"
        return self.connections[-1]

    def open(self) -> None:
        self.released.set()

    @staticmethod
    def closed_by_peer(conn: socket.socket) -> bool:
        conn.settimeout(60)
        try:
            while data := conn.recv(64):
                if not data:
                    break
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.open()
        self.server.close()
        for conn in self.connections:
            conn.close()


class Log:
    """A LogSink that keeps every line and can tell a test when a line has appeared."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self.watched: dict[str, threading.Event] = {}

    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        self.lines.append((phase, stream, line))
        for fragment, event in self.watched.items():
            if fragment in line:
                event.set()

    def watch(self, fragment: str) -> threading.Event:
        return self.watched.setdefault(fragment, threading.Event())

    @property
    def text(self) -> str:
        return "\n".join(line for _, _, line in self.lines)

    def count(self, prefix: str) -> int:
        return sum(1 for _, _, line in self.lines if line.startswith(prefix))


def resolved(git_server: Any, repo: Any, sha: str | None = None) -> ResolvedRepo:
    return ResolvedRepo(
        provider="git",
        spec=repo.url,
        kind="git",
        repo_url=repo.url,
        unresolved_ref="main",
        resolved_ref=sha or repo.head,
        persistent_spec=f"git/{repo.url}/{sha or repo.head}",
        ref_url=repo.url,
        host=git_server.host,
        display_name=repo.name,
    )


def build(
    repo: ResolvedRepo, *, base: tuple[str, ...] | None = SMALL_BASE, **request: Any
) -> tuple[BuildResult, Log]:
    log = Log()
    result = LocalBuilder(base_requirements=base).build(
        BuildRequest(build_id=1, repo=repo, **request), log
    )
    return result, log
