"""Follows a build pod's log into the build log, in a thread of its own.

The builder's own loop watches the pod (its phase, the build's deadline, a cancel request)
and must never sit in a read that a silent build step leaves waiting; so the log is read
here. The stream is opened once the container has started (until then the API answers 400);
it ends when the container ends. A stream cut short (a read timed out after
``read_timeout`` seconds of silence, the connection dropped, the API server ended it) is
opened again from the start, and the lines already read — known by their timestamps — are
skipped. ``done`` is set when the stream ended with the container, or the pod is gone.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import urllib3

from apps.builds.backends.base import LogSink
from apps.builds.backends.kubernetes import r2dlog
from apps.builds.backends.kubernetes.cluster import Cluster, LogNotReady
from apps.builds.backends.kubernetes.pods import CONTAINER
from apps.builds.backends.local.runner import meaningful_line
from portal.errors import BackendError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024  # bytes; a longer line is cut into parts (the build log cuts it again)
TAIL = 50  # lines kept for the error message of a failed build


class LogFollower:
    """Follows the log of pod ``name`` into ``sink`` (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        sink: LogSink,
        *,
        retry_every: float = 1.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.cluster, self.name, self.sink = cluster, name, sink
        self.retry_every, self.read_timeout = retry_every, read_timeout
        self.done = threading.Event()  # the log ended with the container, or the pod is gone
        self.tail: deque[str] = deque(maxlen=TAIL)
        self.failure = ""  # the last message repo2docker logged with phase "failed"
        self._said_unreadable = False
        self._stop = threading.Event()
        self._last: r2dlog.Stamp | None = None  # the newest timestamp read...
        self._same = 0  # ...and how many lines had it (lines read at once share one)
        self._skip = 0  # lines with that timestamp still to skip in a stream read again
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"follow-{name}")

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop following; wait up to ``wait`` seconds for the current stream to end first
        (the rest of a finished container's log is on its way)."""
        if wait > 0:
            self.done.wait(wait)
        self._stop.set()
        # A read in progress ends with the stream or its read timeout; the thread says
        # nothing more once stopped.
        if self._thread.is_alive():
            self._thread.join(timeout=0.2)

    def reason(self) -> str:
        """Why the build failed, as far as its log says."""
        return self.failure or meaningful_line(list(self.tail))

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    response = self.cluster.open_log(self.name, CONTAINER, self.read_timeout)
                except LogNotReady:
                    self._stop.wait(self.retry_every)
                    continue
                except BackendError as exc:
                    if exc.code == "BUILD_POD_LOST":
                        break
                    self._unreadable(exc)  # the builder decides by the pod's phase
                    self._stop.wait(self.retry_every)
                    continue
                if self._follow(response):
                    break
                self._stop.wait(self.retry_every)
        except Exception:  # a bug here must not end the build: the pod's phase decides
            log.exception("following the log of %s failed", self.name)
        finally:
            self.done.set()

    def _unreadable(self, exc: BackendError) -> None:
        if not self._said_unreadable:  # once: a missing pods/log permission would repeat
            self._said_unreadable = True
            log.warning("cannot read the log of %s: %s", self.name, exc.message)
            self.sink(f"The build pod's log cannot be read yet: {exc.message}", stream="stderr")

    def _follow(self, response: urllib3.HTTPResponse) -> bool:
        """Read one stream to its end; True when it ended with the container."""
        replaying, self._skip = self._last is not None, self._same
        try:
            for raw in _lines(response):
                if self._stop.is_set():
                    return True
                replaying = self._take(raw, replaying)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            log.info("log stream of %s cut (%r): reading it again", self.name, exc)
            return False
        finally:
            response.release_conn()
        return self._container_ended()

    def _container_ended(self) -> bool:
        try:
            pod = self.cluster.read_pod(self.name)
        except BackendError:
            return False
        if pod is None:
            return True
        statuses = (pod.status.container_statuses if pod.status else None) or []
        ended = any(s.state is not None and s.state.terminated is not None for s in statuses)
        return ended or (pod.status is not None and pod.status.phase in ("Succeeded", "Failed"))

    def _take(self, raw: str, replaying: bool) -> bool:
        """Log one raw line unless it was read before; returns whether the stream is still
        replaying what was read before."""
        stamp, rest = r2dlog.split_stamp(raw)
        if stamp is not None and self._last is not None:
            if replaying and (stamp < self._last or (stamp == self._last and self._skip > 0)):
                self._skip -= stamp == self._last
                return True
            self._same = self._same + 1 if stamp == self._last else 1
        elif stamp is not None:
            self._same = 1
        if stamp is not None:
            self._last = stamp
        self._emit(rest)
        return False

    def _emit(self, rest: str) -> None:
        for line in r2dlog.parse(rest):
            self.tail.append(line.text)
            if line.failed:
                self.failure = line.text
            self.sink(line.text, phase=line.phase, stream=line.stream)


def _lines(response: Any) -> Iterator[str]:
    """The lines of a streamed response, decoded; a line past MAX_LINE bytes comes in parts."""
    buffer = b""
    for chunk in response.stream(8192, decode_content=True):
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0 and len(buffer) < MAX_LINE:
                break
            end = cut if 0 <= cut < MAX_LINE else MAX_LINE
            yield buffer[:end].decode(errors="replace")
            buffer = buffer[end + 1 :] if end == cut else buffer[end:]
    if buffer:
        yield buffer.decode(errors="replace")
