"""repo2docker's ``--json-logs`` lines as build log lines.

Each line repo2docker prints is a JSON object from python-json-logger: ``message`` (often
with its own trailing newline, a docker build step's output may hold several lines) and,
for most, ``phase`` (repo2docker's ``R2dState``: fetching, building, pushing, running,
failed). The build log knows the portal's phases (as mybinder's event stream): fetching and
building; pushing is part of building; a ``failed`` message goes to stderr and is what the
build's error says when the pod fails. A line that is not JSON (repo2docker's own traceback,
the container runtime's words) is kept as it is.

The pod's log is read with ``timestamps=true``: each line starts with the kubelet's RFC 3339
timestamp, which lets a follower that reconnects skip what it already read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

PHASES = {"fetching": "fetching", "building": "building", "pushing": "building"}
_STAMP = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?(?P<zone>Z|[+-]\d\d:\d\d) "
)

Stamp = tuple[str, str, int]  # (zone, date and time to the second, nanoseconds)


@dataclass(frozen=True)
class Line:
    text: str
    phase: str = "building"
    stream: str = "stdout"
    failed: bool = False  # repo2docker said the build failed, and this is why


def split_stamp(raw: str) -> tuple[Stamp | None, str]:
    """(the line's timestamp, the rest); (None, raw) when it has none."""
    found = _STAMP.match(raw)
    if found is None:
        return None, raw
    nanos = int((found["frac"] or "").ljust(9, "0"))
    return (found["zone"], found["base"], nanos), raw[found.end() :]


def parse(raw: str) -> list[Line]:
    """The build log lines of one line of repo2docker's output (without its timestamp)."""
    text = raw.rstrip("\r\n")
    try:
        record = json.loads(text) if text.startswith("{") else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return [Line(text)] if text.strip() else []
    message = record.get("message")
    if not isinstance(message, str):
        return []  # e.g. push progress records, which carry only layer states
    r2d_phase = str(record.get("phase") or "")
    failed = r2d_phase == "failed"
    phase = PHASES.get(r2d_phase, "building")
    stream = "stderr" if failed or str(record.get("levelname", "")).upper() == "ERROR" else "stdout"
    return [
        Line(part.rstrip(), phase=phase, stream=stream, failed=failed)
        for part in message.splitlines()
        if part.strip()
    ]
