"""How a build calls uv: its binary, the clean environment it runs with, the index flags,
and how its failure reads in the build's error.

uv always runs with ``UV_PYTHON_DOWNLOADS=never``, no configuration file, one shared cache
(``BINDERY_UV_CACHE_DIR``) and ``--offline`` when ``BINDERY_UV_OFFLINE`` (the tests).
"""

from __future__ import annotations

import os
import shutil

from django.conf import settings

from apps.builds.backends.local.network import PASSED_ENV
from apps.builds.backends.local.runner import clean_line, meaningful_line
from portal.errors import BackendError

# uv's words for an index it could not reach: such a failure is transient (the build is retried)
TRANSIENT = (
    "Failed to fetch", "Could not connect", "timed out", "dns error", "Connection reset",
    "error sending request", "Temporary failure", "503 Service", "502 Bad Gateway",
)  # fmt: skip


def uv_binary() -> str:
    configured = getattr(settings, "BINDERY_UV_BIN", "")
    if configured:
        return str(configured)
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise BackendError("uv is not installed.", code="UV_MISSING") from None
        return found


def uv_env(home: str) -> dict[str, str]:
    """A clean environment for uv: no portal secrets for sdist build scripts to read."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": home,
        "UV_CACHE_DIR": str(settings.BINDERY_UV_CACHE_DIR),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
        "UV_NO_PROGRESS": "1",
        **{k: v for k in PASSED_ENV if (v := os.environ.get(k))},
    }


def index_args() -> list[str]:
    args = ["--offline"] if settings.BINDERY_UV_OFFLINE else []
    if settings.BINDERY_PACKAGE_INDEX:
        args += ["--index-url", settings.BINDERY_PACKAGE_INDEX]
    return args


def fail(tail: list[str], code: str) -> None:
    """Raise BackendError ``code`` for a uv command that failed with ``tail`` as its last
    lines: uv's cause as the message, transient when the index could not be reached."""
    text = "\n".join(tail)
    cause = meaningful_line(tail)
    for line in tail:
        for marker in ("cause:", "error:", "╰─▶"):
            if marker in line and "No solution found" not in line:
                cause = clean_line(line.split(marker, 1)[1])
    transient = any(marker in text for marker in TRANSIENT)
    what = (
        "Creating the environment" if code == "ENVIRONMENT_FAILED"
        else "Installing the packages"
    )  # fmt: skip
    raise BackendError(
        f"{what} failed: {cause.strip()[:500]}",
        permanent=not transient,
        code=code,
    )
