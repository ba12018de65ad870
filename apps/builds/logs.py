"""The build log sink: redacts each line, stores it, and publishes it live.

Lines are buffered for at most ``FLUSH_INTERVAL`` seconds and written in one bulk insert,
then published to the ``build-<id>`` group, so a chatty build costs a few queries a second,
not one per line, and a quiet one still shows its last line at once.

What is stored is bounded: a line is cut at ``BINDERY_BUILD_LOG_MAX_LINE`` bytes, and once
a build's stored lines would pass ``BINDERY_BUILD_LOG_MAX_BYTES`` (or ``MAX_LINES`` lines)
one "log truncated" line is stored and nothing after it; the build goes on and its phases
are still published.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from apps.builds.models import Build, BuildLogLine
from apps.builds.redaction import Redactor
from portal.events import publish

FLUSH_INTERVAL = 0.2
MAX_LINES = 50_000  # past this, the log is truncated (as past BINDERY_BUILD_LOG_MAX_BYTES)
TRUNCATED = "… log truncated: "  # how the one line that says so begins
LINE_CUT = " …[line truncated]"


def _size(amount: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if amount >= factor:
            return f"{round(amount / factor, 1):g} {unit}"
    return f"{amount} bytes"


def truncated_line(max_bytes: int | None = None, max_lines: int | None = None) -> str:
    """The line stored in place of the rest of a log past ``max_bytes`` or ``max_lines``."""
    limit = _size(max_bytes) if max_bytes is not None else f"{max_lines} lines"
    return f"{TRUNCATED}the build printed more than {limit}; the rest is not stored"


def cut_line(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8 (a character is never split),
    marked when cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode(errors="ignore") + LINE_CUT


def group_for(build_id: int) -> str:
    return f"build-{build_id}"


def line_payload(line: BuildLogLine) -> dict[str, Any]:
    return {"n": line.n, "phase": line.phase, "stream": line.stream, "text": line.text}


class BuildLog:
    """A LogSink for one build. Thread-safe; call ``close()`` when the build ends."""

    def __init__(self, build: Build, redactor: Redactor | None = None):
        self.build_id = build.pk
        self.redact = redactor or Redactor()
        self.max_bytes = int(settings.BINDERY_BUILD_LOG_MAX_BYTES)
        self.max_line = int(settings.BINDERY_BUILD_LOG_MAX_LINE)
        self._n = build.log_size
        # a retried build goes on with what its earlier attempts stored
        self._bytes, self._truncated = (0, False)
        if build.log_size:
            self._bytes, self._truncated = _stored(build, self.max_bytes)
        self._phase = self._published_phase = build.phase
        self._pending: list[BuildLogLine] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"log-{build.pk}")
        self._thread.start()

    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        text = cut_line(self.redact(line.rstrip("\n")), self.max_line)
        size = len(text.encode()) + 1  # and its newline, as a downloaded log would have
        with self._lock:
            self._phase = phase
            if self._truncated:
                return  # not stored, not numbered: log_size stays the stored lines' count
            if self._bytes + size > self.max_bytes:
                text, stream = truncated_line(max_bytes=self.max_bytes), "stderr"
                self._truncated = True
            elif self._n + 1 >= MAX_LINES:
                text, stream = truncated_line(max_lines=MAX_LINES), "stderr"
                self._truncated = True
            else:
                self._bytes += size
            self._n += 1
            self._pending.append(
                BuildLogLine(
                    build_id=self.build_id, n=self._n, phase=phase, stream=stream, text=text
                )
            )

    def _run(self) -> None:
        try:
            while not self._stop.wait(FLUSH_INTERVAL):
                self.flush()
        finally:
            connection.close()  # this thread's own connection

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            size, phase = self._n, self._phase
            phase_changed = phase != self._published_phase
            self._published_phase = phase
        if not lines and not phase_changed:
            return
        close_old_connections()
        if lines:
            BuildLogLine.objects.bulk_create(lines, ignore_conflicts=True)
        updates: dict[str, Any] = {"heartbeat_at": timezone.now(), "log_size": size}
        if phase_changed:
            updates["phase"] = phase
        Build.objects.filter(pk=self.build_id).update(**updates)
        group = group_for(self.build_id)
        if phase_changed:
            publish(group, {"kind": "status", "id": self.build_id, "status": "running",
                            "phase": phase, "log_size": size})  # fmt: skip
        if lines:
            publish(group, {"kind": "log", "lines": [line_payload(line) for line in lines]})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()


def _stored(build: Build, max_bytes: int) -> tuple[int, bool]:
    """The bytes of ``build``'s stored lines, and whether the last says it is truncated."""
    texts = BuildLogLine.objects.filter(build_id=build.pk).order_by("n")
    size, last = 0, ("", "")
    for text, stream in texts.values_list("text", "stream").iterator():
        size += len(text.encode()) + 1
        last = (text, stream)
    markers = {truncated_line(max_bytes=max_bytes), truncated_line(max_lines=MAX_LINES)}
    return size, last[1] == "stderr" and last[0] in markers


def publish_status(build: Build) -> None:
    publish(group_for(build.pk), {"kind": "status", **status_payload(build)})


def status_payload(build: Build) -> dict[str, Any]:
    return {
        "id": build.pk,
        "status": build.status,
        "phase": build.phase,
        "error_code": build.error_code,
        "error_message": build.error_message,
        "log_size": build.log_size,
    }


def bump_heartbeat(build_id: int) -> None:
    Build.objects.filter(pk=build_id).update(heartbeat_at=timezone.now())
