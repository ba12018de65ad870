"""The build log sink: redacts each line, stores it, and publishes it live.

Lines are buffered for at most ``FLUSH_INTERVAL`` seconds and written in one bulk insert,
then published to the ``build-<id>`` group, so a chatty build costs a few queries a second,
not one per line, and a quiet one still shows its last line at once.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone

from apps.builds.models import Build, BuildLogLine
from apps.builds.redaction import Redactor
from portal.events import publish

FLUSH_INTERVAL = 0.2
MAX_LINE = 4000
MAX_LINES = 50_000  # past this, lines are counted but not stored


def group_for(build_id: int) -> str:
    return f"build-{build_id}"


def line_payload(line: BuildLogLine) -> dict[str, Any]:
    return {"n": line.n, "phase": line.phase, "stream": line.stream, "text": line.text}


class BuildLog:
    """A LogSink for one build. Thread-safe; call ``close()`` when the build ends."""

    def __init__(self, build: Build, redactor: Redactor | None = None):
        self.build_id = build.pk
        self.redact = redactor or Redactor()
        self._n = build.log_size
        self._phase = self._published_phase = build.phase
        self._pending: list[BuildLogLine] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"log-{build.pk}")
        self._thread.start()

    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        text = self.redact(line.rstrip("\n"))
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " …[line truncated]"
        with self._lock:
            self._n += 1
            self._phase = phase
            if self._n <= MAX_LINES:
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
