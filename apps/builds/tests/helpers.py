"""Test helpers shared by the build tests."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.builds.backends.base import BuildRequest, BuildResult
from apps.builds.backends.local import LocalBuilder
from apps.builds.backends.local.network import network_plan
from apps.builds.backends.local.steps import sandbox_mode
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


class Arrival:
    """One script at the gate: the write end of its FIFO (``fd`` -1 until opened)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.opened = threading.Event()
        self.answered = False


class Gate:
    """A rendezvous with a postBuild script that needs no network (an isolated build reaches
    nothing on this machine, the test's sockets included): a FIFO in the script's checkout.

    The script (:attr:`script`) makes the FIFO, says ``gate waiting at <path>`` and reads it.
    The test hands the build's log lines to :meth:`feed` (``Log(gate.feed)`` does it): at that
    line the gate opens the FIFO for writing, which completes once the script reads: the
    script has arrived. :meth:`open` lets every script through, then and later: it writes
    ``go``, which the script prints (``gate go``). A FIFO whose reader is gone reports an
    error to its writer: :meth:`closed_by_peer` tells the test the script's process is gone.
    """

    def __init__(self) -> None:
        self.name = unique(".gate")
        self.released = threading.Event()
        self.arrived = threading.Event()
        self.connections: list[Arrival] = []
        self._lock = threading.Lock()

    @property
    def script(self) -> str:
        return (
            f"mkfifo {self.name}\n"
            f'echo "gate waiting at $PWD/{self.name}"\n'
            f"read word < {self.name}\n"
            f"rm -f {self.name}\n"
            'echo "gate $word"\n'
        )

    def feed(self, line: str) -> None:
        """Look at one line of the build's log."""
        marker = "gate waiting at "
        if marker in line and line.rstrip().endswith(f"/{self.name}"):
            arrival = Arrival(line.split(marker, 1)[1].strip())
            with self._lock:
                self.connections.append(arrival)
            threading.Thread(target=self._attach, args=(arrival,), daemon=True).start()

    def _attach(self, arrival: Arrival) -> None:
        with contextlib.suppress(OSError):  # (the script's checkout is gone already)
            arrival.fd = os.open(arrival.path, os.O_WRONLY)  # returns once the script reads
        arrival.opened.set()
        if arrival.fd >= 0:
            self.arrived.set()
        if self.released.is_set():
            self._answer(arrival)

    def _answer(self, arrival: Arrival) -> None:
        with self._lock:
            if arrival.fd >= 0 and not arrival.answered:
                arrival.answered = True
                with contextlib.suppress(OSError):
                    os.write(arrival.fd, b"go\n")

    def wait_arrival(self) -> Arrival:
        assert self.arrived.wait(120), "postBuild never reached the gate"
        return next(a for a in reversed(self.connections) if a.fd >= 0)

    def open(self) -> None:
        self.released.set()
        for arrival in list(self.connections):
            if arrival.opened.is_set():
                self._answer(arrival)

    @staticmethod
    def closed_by_peer(conn: Arrival, timeout: float = 60) -> bool:
        """Whether the script reading ``conn`` is gone (waiting up to ``timeout``)."""
        assert conn.opened.wait(timeout) and conn.fd >= 0
        poller = select.poll()
        poller.register(conn.fd, select.POLLERR)  # a pipe without readers
        return bool(poller.poll(int(timeout * 1000)))

    def close(self) -> None:
        self.open()
        with self._lock:
            for arrival in self.connections:
                if arrival.fd >= 0:
                    os.close(arrival.fd)
                    arrival.fd = -1


def children_of(parent: int, program: str) -> list[int]:
    """The live processes whose parent is ``parent`` and whose executable's name starts with
    ``program``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if os.path.basename(os.readlink(f"/proc/{entry.name}/exe")).startswith(program):
                found.append(int(entry.name))
    return found


def pastas_of(parent: int) -> list[int]:
    """The pasta processes ``parent`` started (pasta is the passt binary)."""
    return children_of(parent, "passt")


def exits(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` has exited or does within ``timeout`` (a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def builds_isolated() -> bool:
    """Whether builds here get a network namespace of their own (BINDERY_BUILD_NETWORK
    auto, as by default): bubblewrap, pasta, nsenter, ip, root, an IPv4 default route."""
    return sandbox_mode() == "bwrap" and network_plan(sandboxed=True)[0] is not None


class Log:
    """A LogSink that keeps every line and can tell a test when a line has appeared."""

    def __init__(self, *listeners: Callable[[str], None]) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self.watched: dict[str, threading.Event] = {}
        self.listeners = listeners  # called with every line (Gate.feed)

    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        self.lines.append((phase, stream, line))
        for fragment, event in self.watched.items():
            if fragment in line:
                event.set()
        for listener in self.listeners:
            listener(line)

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
    repo: ResolvedRepo,
    *,
    base: tuple[str, ...] | None = SMALL_BASE,
    log: Log | None = None,
    **request: Any,
) -> tuple[BuildResult, Log]:
    log = log if log is not None else Log()
    result = LocalBuilder(base_requirements=base).build(
        BuildRequest(build_id=1, repo=repo, **request), log
    )
    return result, log


@contextlib.contextmanager
def tcp_listener(family: socket.AddressFamily, host: str) -> Iterator[int]:
    """A TCP listener (the kernel completes handshakes from its backlog: no accept needed)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
