from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.builds.signals import build_finished


@receiver(build_finished)
def _start_waiting_sessions(sender: Any, build_id: int, **kwargs: Any) -> None:
    from apps.sessions.tasks import start_waiting_sessions

    start_waiting_sessions.delay(build_id)
