"""One build's clock, log and subprocesses, and how a command's last words are read.

:class:`Job` is a build in progress: its deadline and cancel flag, its log, the time each
step took and the warnings said so far, and ``Job.run``, which runs a command in its own
process group, streams its output to the log (bounded: a child flooding the log waits for
the log, not the worker's memory) and kills the group on cancel or timeout.
``clean_line`` and ``meaningful_line`` turn what a failed command printed last into a
sentence for its error message.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import resource
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.builds.backends import progress
from apps.builds.backends.base import BuildRequest, LogSink
from portal.errors import BackendError

log = logging.getLogger(__name__)

_MAX_LINE = 8192  # bytes of child output read at once (a longer line arrives in parts)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]")
_SPINNER = re.compile(r"^[\s\-\\|/⠀-⣿.·•]*$")
# Python's warnings module: "<file>:<line>: <Category>: <message>", then the source line, indented
_WARNING = re.compile(r"^\S.*?:\d+: (?:[A-Z]\w*)?Warning: (.+)$")


class Job:
    def __init__(self, request: BuildRequest, log: LogSink) -> None:
        self.request = request
        self.log = log
        self.cancel = request.cancel
        self.timeout = request.timeout
        self.started = time.monotonic()
        self.deadline = self.started + request.timeout
        self.durations: dict[str, float] = {}
        self.warnings: list[str] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self.cancel.is_set():
            raise BackendError("The build was cancelled.", code="BUILD_CANCELLED")
        if time.monotonic() >= self.deadline:
            raise BackendError(
                f"The build took longer than {self.timeout:g} s and was stopped.",
                code="BUILD_TIMEOUT",
            )

    def say(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        self.log(line, phase=phase, stream=stream)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.say(f"Warning: {text}", stream="stderr")

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations[name] = round(
                self.durations.get(name, 0.0) + time.monotonic() - start, 3
            )

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        phase: str = "building",
        pass_fds: Sequence[int] = (),
        preexec: Callable[[], None] | None = None,
        output: progress.Output | None = None,
    ) -> tuple[int, list[str]]:
        """Run ``argv`` in its own process group, streaming every line to the log.

        Returns (exit status, last lines logged). On cancel or timeout the whole process
        group is killed and BUILD_CANCELLED / BUILD_TIMEOUT raised. A line is read
        ``_MAX_LINE`` bytes at a time at most: a child printing without newlines cannot make
        the worker hold more. ``output`` (``progress``) rewords or leaves out each line and
        adds progress lines while the child is quiet.
        """
        self.check()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, pass_fds=tuple(pass_fds),
            preexec_fn=preexec,
        )  # fmt: skip
        # bounded: a child flooding the log waits for the log, not the worker's memory
        lines: queue.Queue[tuple[str, bytes | None]] = queue.Queue(maxsize=1000)

        def pump(stream: Any, name: str) -> None:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                lines.put((name, raw))
            lines.put((name, None))

        for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            threading.Thread(target=pump, args=(stream, name), daemon=True).start()
        tail: deque[str] = deque(maxlen=40)
        open_streams, exited_at = 2, 0.0
        try:
            while open_streams:
                if output is not None and (note := output.tick()):
                    self.say(note, phase=phase)
                try:
                    name, raw = lines.get(timeout=0.1)
                except queue.Empty:
                    self.check()
                    if not exited_at and proc.poll() is not None:
                        exited_at = time.monotonic()
                        _kill_group(proc)  # leftovers holding the pipes open
                    elif exited_at and time.monotonic() - exited_at > 5:
                        break  # something escaped the group and kept the pipes: stop reading
                    continue
                if raw is None:
                    open_streams -= 1
                    continue
                for part in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                    text = part if output is None or not part.strip() else output.line(part)
                    if text and text.strip():
                        tail.append(text)
                        self.say(text, phase=phase, stream=name)
            while True:
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    self.check()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        _kill_group(proc)
        if output is not None and (note := output.end(proc.returncode)):
            self.say(note, phase=phase)
        return proc.returncode, list(tail)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def capture(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    input_text: str,
    timeout: float | None,
    pass_fds: Sequence[int] = (),
) -> tuple[int, list[str]]:
    try:
        done = subprocess.run(
            argv, input=input_text, capture_output=True, text=True, env=env, cwd=cwd,
            timeout=timeout, pass_fds=tuple(pass_fds), check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, ["timed out"]
    return done.returncode, done.stdout.splitlines()[-40:]


def build_limits(join: Callable[[], None] | None = None) -> Callable[[], None]:
    """For a build command's process, before it execs: limits that hold for its whole tree
    (the build's uid is its own, so the process count is the build's): processes, the size
    of any one file, CPU seconds."""
    processes = int(getattr(settings, "BINDERY_BUILD_MAX_PROCESSES", 512))
    file_size = int(getattr(settings, "BINDERY_BUILD_MAX_FILE_BYTES", 8 * 1024**3))
    cpu = int(getattr(settings, "BINDERY_BUILD_TIMEOUT", 1200)) * 2

    def limit() -> None:
        if join is not None:
            join()
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return limit


@lru_cache(maxsize=8)
def log_once(message: str) -> None:
    """``message`` in the operators' log, once per worker process."""
    log.warning(message)


def clean_line(line: str) -> str:
    """``line`` without terminal escape codes, carriage-return redraws or characters rubbed
    out with backspaces (how JupyterLab's build draws its spinner)."""
    text = line.rsplit("\r", 1)[-1]
    if "\b" in text:
        kept: list[str] = []
        for char in text:
            if char != "\b":
                kept.append(char)
            elif kept:
                kept.pop()
        text = "".join(kept)
    return _ANSI.sub("", text).strip()


def meaningful_line(tail: Sequence[str]) -> str:
    """The last line of ``tail`` that says something: escape codes stripped, progress
    spinners (``-\\|/``, braille, with or without backspaces) and blank lines skipped; a Python
    warning counts as its message, and the source line Python prints under it is skipped."""
    for index in range(len(tail) - 1, -1, -1):
        text = clean_line(tail[index])
        if not text or _SPINNER.match(text):
            continue
        if index and tail[index][:1] in (" ", "\t") and _WARNING.match(clean_line(tail[index - 1])):
            continue
        warning = _WARNING.match(text)
        return warning.group(1).strip() if warning else text
    return ""
