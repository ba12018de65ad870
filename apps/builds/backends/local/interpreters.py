"""The Pythons a build can run on, and each one's base set of Jupyter packages.

``choose_interpreter`` takes the minor a repository asks for (runtime.txt, environment.yml,
Pipfile) when that Python is on this machine (``find_interpreter``: uv's discovery, never a
download) and at least ``MIN_PYTHON``; otherwise the default one
(``BINDERY_BUILD_PYTHON``, else the portal's own), with a warning. Each minor gets its base
set: ``base-requirements-X.Y.txt`` (beside this package, in ``apps/builds/backends/``) for
a minor the newest Jupyter packages no longer support, else ``base-requirements.txt``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from apps.builds.backends.config import BuildPlan
from apps.builds.backends.local.uv_tool import uv_binary
from portal.errors import BackendError

log = logging.getLogger(__name__)

# In apps/builds/backends/, where bin/warm-test-cache and the tests read them too.
BASE_REQUIREMENTS_FILE = Path(__file__).parent.with_name("base-requirements.txt")
# The oldest Python with a base set of its own (base-requirements-3.6.txt: jupyterhub 2.3,
# jupyterlab 2.3 on the classic notebook server; launches through the 6.x hub, tested).
MIN_PYTHON = (3, 6)


def read_base_requirements(path: Path = BASE_REQUIREMENTS_FILE) -> tuple[str, ...]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def base_requirements_file(minor: str) -> Path:
    """The base set for Python ``minor`` ("X.Y"): ``base-requirements-X.Y.txt`` when the
    newest Jupyter packages do not support that minor, else ``base-requirements.txt``."""
    own = BASE_REQUIREMENTS_FILE.with_name(f"base-requirements-{minor}.txt")
    return own if own.is_file() else BASE_REQUIREMENTS_FILE


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.7"
    prefix: str  # its installation (sys.base_prefix), bound read-only into the sandbox

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@lru_cache(maxsize=32)
def _probe(path: str) -> Interpreter | None:
    try:
        out = subprocess.run(
            [path, "-I", "-c", "import platform, sys; print(platform.python_version()); "
             "print(sys.base_prefix)"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return Interpreter(path=path, version=out[0].strip(), prefix=os.path.realpath(out[1]))


def default_interpreter() -> Interpreter:
    """``settings.BINDERY_BUILD_PYTHON`` if set, else the interpreter the portal runs on."""
    configured = getattr(settings, "BINDERY_BUILD_PYTHON", "")
    candidate = configured or os.path.join(
        sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    found = _probe(candidate) or _probe(sys.executable)
    if found is None:
        log.error("the build interpreter %s (BINDERY_BUILD_PYTHON) does not run", candidate)
        raise BackendError(
            "This machine's Python for builds does not run; the operators have the details.",
            code="BUILD_PYTHON_MISSING",
        )
    return found


def find_interpreter(version: str) -> Interpreter | None:
    """An installed CPython ``version`` ("X.Y"), found by uv without downloading anything.

    pyenv's shims make uv's discovery fail outright for versions pyenv has not activated,
    so shim directories are left out of the search path and pyenv's installations are
    searched directly instead.
    """
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and "shims" not in d]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        dirs += sorted((str(p / "bin") for p in pyenv.iterdir()), reverse=True)
    try:
        out = subprocess.run(
            [uv_binary(), "python", "find", "--system", "--no-project", "--no-config", version],
            capture_output=True, text=True, timeout=30, cwd="/",
            env={"PATH": os.pathsep.join(dirs), "UV_PYTHON_DOWNLOADS": "never",
                 "HOME": tempfile.gettempdir()},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    found = _probe(out.stdout.strip())
    return found if found is not None and found.minor == version else None


def choose_interpreter(plan: BuildPlan) -> tuple[Interpreter, list[str]]:
    """The interpreter for ``plan`` and the warnings to show when it is not the one asked."""
    default = default_interpreter()
    wanted = plan.python_version
    if not wanted or wanted == default.minor:
        return default, []
    asked = f"Python {wanted} (asked for by {plan.python_source})"
    if tuple(int(p) for p in wanted.split(".")) < MIN_PYTHON:
        oldest = ".".join(map(str, MIN_PYTHON))
        return default, [
            f"{asked} is older than {oldest}, the oldest this builder has Jupyter server "
            f"packages for; using Python {default.version} instead."
        ]
    found = find_interpreter(wanted)
    if found is None:
        return default, [
            f"{asked} is not installed on this machine; using Python {default.version} instead."
        ]
    return found, []


def usable_interpreters() -> list[tuple[Interpreter, str]]:
    """(interpreter, base set file) for every Python a runtime.txt can get here: the default
    and each minor from MIN_PYTHON to 3.14 found on this machine, oldest first. Looked up
    again at most every five minutes (each minor is a ``uv python find``)."""
    return _usable_interpreters(int(time.monotonic() // 300))


@lru_cache(maxsize=1)
def _usable_interpreters(_period: int) -> list[tuple[Interpreter, str]]:
    default = default_interpreter()
    found = {default.minor: default}
    minors = [f"3.{minor}" for minor in range(MIN_PYTHON[1], 15) if f"3.{minor}" != default.minor]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for interpreter in pool.map(find_interpreter, minors):
            if interpreter is not None:
                found[interpreter.minor] = interpreter
    ordered = sorted(found.values(), key=lambda i: tuple(int(p) for p in i.minor.split(".")))
    return [(i, base_requirements_file(i.minor).name) for i in ordered]
