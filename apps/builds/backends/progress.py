"""What a build's uv and bytecode steps print, made fit for the build log.

The build log is for the person building: it says what is happening and how long it takes,
in their words, not the machine's. uv and ``compileall`` name host paths (the interpreter's
installation, the environment, whose name is the environment key, the checkout, the cache);
the readers here sit between a step's output and the log (``local.runner.Job.run`` hands them
every line, and asks them for a progress line while the step is quiet):

- ``UvOutput`` keeps uv's milestones, reworded ("Resolved 87 packages in 1.2 s",
  "Prepared 12 packages (downloaded or built) in 8.0 s", "Installed 87 packages in 3.1 s",
  "Compiled bytecode: 4,100 files in 6.0 s"), leaves out the lines that only name a path
  ("Using Python 3.11.7 environment at: /…"), and names the paths in every other line for
  people (``Places``: the repository's files by their path in it, the rest as
  ``<environment>``, ``Python 3.11.7``, ``<uv cache>``…). While uv is quiet, it says what uv
  is doing (known from its last milestone, its downloads and source builds under way) and
  for how long.
- ``CompileOutput`` reads ``python -m compileall`` (not ``-q``): it names every file it
  compiles; those lines are counted, not logged. While it runs: the count so far; at the
  end: the total and the time. Its error lines are kept, their paths made relative.

Progress lines come only after ``PROGRESS_EVERY`` seconds without any line, and at most that
often: a quiet step of two minutes adds about two dozen lines, a chatty one none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

PROGRESS_EVERY = 5.0  # seconds of quiet before a progress line, and between two of them

_UV_PATH_LINE = re.compile(r"^(?:Using .+ (?:interpreter|environment) at: |Activate with: )")
_UV_VENV = re.compile(r"^Creating (?:virtual environment|virtualenv) at: ")
_UV_MILESTONE = re.compile(
    r"^(?P<what>Resolved|Prepared|Installed|Uninstalled|Audited|Bytecode compiled) "
    r"(?P<count>[\d,]+) (?P<noun>packages?|files?) in (?P<took>.+?)\s*$"
)
_UV_ELAPSED = re.compile(
    r"^(?:(?P<min>\d+)m (?P<sec>\d+)s|(?P<s>\d+(?:\.\d+)?)s|(?P<ms>\d+(?:\.\d+)?)ms)$"
)
# "Downloading numpy (16.1MiB)", " Downloaded numpy", "Building foo @ file://…", " Built foo @ …"
_UV_IN_FLIGHT = re.compile(r"^(?P<verb>Downloading|Downloaded|Building|Built) (?P<name>[^\s(]+)")
_UV_ERROR = re.compile(r"^(?:error:|\u00d7)")  # uv's "error: …", or its fancy cross
_UV_SIZE = re.compile(r"\((\d+(?:\.\d+)?)([KMG]iB)\)")  # uv's "(16.1MiB)"
_COMPILING = re.compile(r"Compiling '.*?'\.\.\.|Compiling \".*?\"\.\.\.")
_LISTING = re.compile(r"Listing '.*?'\.\.\.|Listing \".*?\"\.\.\.")


class Output(Protocol):
    """Reads one command's output for the build log."""

    def line(self, text: str) -> str | None:
        """``text`` (one line the command printed) as the log should have it; None: left out."""

    def tick(self) -> str | None:
        """A progress line when one is due, else None. Called often while the command runs."""

    def end(self, status: int) -> str | None:
        """A closing line once the command exited with ``status``, or None."""


def seconds(value: float) -> str:
    """A duration for people: ``42 ms``, ``3.1 s``, ``2 min 5 s``."""
    if value < 0.1:
        return f"{max(0, round(value * 1000))} ms"
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    return f"{whole // 60} min {whole % 60} s"


def _so_far(value: float) -> str:
    """How long a step has run, in a progress line: ``12 s``, ``2 min 5 s``."""
    return seconds(value) if value >= 60 else f"{int(value)} s"


def uv_duration(text: str) -> str:
    """uv's ``42ms``, ``2.66s``, ``1m 03s`` as :func:`seconds` says them (unknown: as is)."""
    found = _UV_ELAPSED.match(text.strip())
    if found is None:
        return text.strip()
    if found["min"] is not None:
        return seconds(int(found["min"]) * 60 + int(found["sec"]))
    if found["s"] is not None:
        return seconds(float(found["s"]))
    return seconds(float(found["ms"]) / 1000)


class Places:
    """The host paths a step's output may name, and what the log calls each instead.

    ``prefixes`` are directories whose paths the log shows relative to them (the checkout:
    ``binder/requirements.txt``); ``names`` are paths the log names in words. The longest
    match wins, so a file inside the environment is not shown as inside the build directory.
    """

    def __init__(
        self,
        names: Sequence[tuple[str | Path, str]] = (),
        prefixes: Sequence[tuple[str | Path, str]] = (),
    ) -> None:
        pairs: list[tuple[str, str]] = []
        for path, prefix in prefixes:
            if str(path) not in ("", "/"):
                pairs.append((str(path).rstrip("/") + "/", prefix))
        for path, name in names:
            if str(path) not in ("", "/"):
                pairs.append((f"file://{str(path).rstrip('/')}", name))
                pairs.append((str(path).rstrip("/"), name))
        self.pairs = tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))

    def plain(self, text: str) -> str:
        for path, name in self.pairs:
            if path in text:
                text = text.replace(path, name)
        return text


class _Reader:
    """What both readers share: the clock, the state a progress line names, and when the
    log last heard from the step."""

    def __init__(self, places: Places, clock: Callable[[], float] = time.monotonic) -> None:
        self.places = places
        self.clock = clock
        self.started = self.last_said = clock()
        self.doing: str | None = None  # what the step is doing now, for progress lines
        self.doing_since = self.started

    def said(self) -> None:
        self.last_said = self.clock()

    def now_doing(self, what: str | None) -> None:
        self.doing, self.doing_since = what, self.clock()

    def due(self) -> float | None:
        """Seconds the current state has lasted, when a progress line is due; else None."""
        now = self.clock()
        if self.doing is None or now - self.last_said < PROGRESS_EVERY:
            return None
        self.last_said = now
        return now - self.doing_since


class UvOutput(_Reader):
    """Reads ``uv venv``, ``uv pip install`` and ``uv pip uninstall`` (see the module
    docstring). ``compiles``: the install has ``--compile-bytecode`` (uv compiles after
    installing, and says so only at the end). ``hold_errors``: from uv's first error on,
    lines go to :attr:`held` instead of the log (an attempt whose failure is expected)."""

    def __init__(
        self,
        places: Places,
        *,
        compiles: bool = False,
        doing: str | None = "Resolving dependencies",
        hold_errors: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(places, clock)
        self.compiles = compiles
        self.hold_errors = hold_errors
        self.held: list[str] = []
        # what uv has said it started and not yet finished: large downloads, source builds
        self.downloading: dict[str, None] = {}
        self.building: dict[str, None] = {}
        self.now_doing(doing)

    def line(self, text: str) -> str | None:
        stripped = text.strip()
        if not stripped or _UV_PATH_LINE.match(stripped):
            return None
        if self.held or (self.hold_errors and _UV_ERROR.match(stripped)):
            self.held.append(self.places.plain(text.rstrip()))
            return None
        if _UV_VENV.match(stripped):
            self.said()
            return "Creating the virtual environment"
        self._follow(stripped)
        found = _UV_MILESTONE.match(stripped)
        self.said()
        if found is None:
            return self.places.plain(_UV_SIZE.sub(r"(\1 \2)", text.rstrip()))
        what, noun, took = found["what"], found["noun"], uv_duration(found["took"])
        count = f"{int(found['count'].replace(',', '')):,}"
        if what == "Resolved":
            self.now_doing(f"Installing {count} {noun}")
            return f"Resolved {count} {noun} in {took}"
        if what == "Prepared":
            return f"Prepared {count} {noun} (downloaded or built) in {took}"
        if what == "Installed":
            self.now_doing("Compiling bytecode" if self.compiles else None)
            return f"Installed {count} {noun} in {took}"
        self.now_doing(None)
        if what == "Bytecode compiled":
            return f"Compiled bytecode: {count} {noun} in {took}"
        return f"{what} {count} {noun} in {took}"  # Uninstalled, Audited (nothing to do)

    def _follow(self, stripped: str) -> None:
        """Keep :attr:`downloading` and :attr:`building` up to date from one line."""
        found = _UV_IN_FLIGHT.match(stripped)
        if found is None:
            return
        verb, name = found["verb"], found["name"].split("==", 1)[0]
        into = self.downloading if verb.startswith("Download") else self.building
        if verb in ("Downloading", "Building"):
            into[name] = None
        else:
            into.pop(name, None)

    def tick(self) -> str | None:
        lasted = self.due()
        if lasted is None:
            return None
        doing = self.doing
        if self.building:
            doing = f"Building {_some(self.building)} from source"
        elif self.downloading:
            doing = f"Downloading {_some(self.downloading)}"
        return f"{doing}… ({_so_far(lasted)})"

    def end(self, status: int) -> str | None:
        return None


def _some(names: dict[str, None]) -> str:
    """``a``, ``a and b``, ``a, b, c and 2 more``."""
    shown = list(names)[:3]
    more = len(names) - len(shown)
    if more:
        return f"{', '.join(shown)} and {more} more"
    return " and ".join(shown) if len(shown) < 3 else f"{shown[0]}, {shown[1]} and {shown[2]}"


class CompileOutput(_Reader):
    """Reads ``python -m compileall`` run without ``-q`` (see the module docstring). Its
    workers (``-j 0``) print at once, so one line read may hold parts of several: files are
    counted wherever ``Compiling '…'...`` appears, and what is left of such a line is kept
    only when it says something."""

    def __init__(self, places: Places, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(places, clock)
        self.files = 0
        self.now_doing("Compiling bytecode")

    def line(self, text: str) -> str | None:
        self.files += len(_COMPILING.findall(text))
        rest = _LISTING.sub("", _COMPILING.sub("", text))
        if not rest.strip():
            return None
        self.said()
        # a line of its own keeps its indentation (a SyntaxError's caret lines up)
        return self.places.plain(rest.rstrip() if rest == text else rest.strip())

    def tick(self) -> str | None:
        lasted = self.due()
        if lasted is None:
            return None
        return f"Compiling bytecode: {self.files:,} files… ({_so_far(lasted)})"

    def end(self, status: int) -> str | None:
        if not self.files:
            return None
        took = seconds(self.clock() - self.started)
        return f"Compiled bytecode: {self.files:,} files in {took}"
