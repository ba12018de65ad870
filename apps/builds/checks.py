"""System checks (``manage.py check``, and every process start) for the build sandbox."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from apps import sandbox


@checks.register(checks.Tags.security)
def sandbox_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """BINDERY_SANDBOX must be on or off; off is said loudly; on where this machine cannot
    sandbox is said too (builds and sessions are then refused, not run unsandboxed)."""
    try:
        mode = sandbox.normalise_mode(str(settings.BINDERY_SANDBOX))
    except ValueError as exc:
        return [checks.Error(str(exc), id="bindery.E010")]
    if mode == "off":
        return [
            checks.Warning(
                "BINDERY_SANDBOX is off: code from repositories (setup.py, postBuild, start, "
                "notebooks) runs as root with no sandbox and can read and change everything "
                "on this machine.",
                hint="Set BINDERY_SANDBOX=on (the default) unless every user is trusted.",
                id="bindery.W010",
            )
        ]
    problem = sandbox.probe()
    if problem:
        return [
            checks.Warning(
                f"The sandbox cannot run here ({problem}): builds and sessions will be refused "
                "with SANDBOX_UNAVAILABLE.",
                hint="Run as root with bubblewrap and setpriv installed (bin/setup does).",
                id="bindery.W011",
            )
        ]
    return []
