from __future__ import annotations

from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "apps.sessions"
    label = "launches"  # Django's own "sessions" label is taken
    verbose_name = "Sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.sessions import (
            checks,  # noqa: F401  (registers the kubernetes session check)
            receivers,  # noqa: F401  (connects build_finished)
        )
        from apps.sessions.hub import HubClient
        from portal.health import register_check

        register_check("hub", lambda: HubClient().health())
