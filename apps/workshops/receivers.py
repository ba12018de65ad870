from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.builds.signals import build_finished
from apps.sessions.signals import session_ready


@receiver(build_finished)
def _workshop_build_finished(sender: Any, build_id: int, status: str = "", **kwargs: Any) -> None:
    """A workshop's pre-build ended: tell its instructor when it failed (page and email),
    and fill its warm pool when it is ready."""
    from apps.workshops.services import build_ended

    build_ended(build_id)


@receiver(session_ready)
def _workshop_server_ready(sender: Any, session_id: int, **kwargs: Any) -> None:
    from apps.workshops.services import warm_server_ready

    warm_server_ready(session_id)
