from __future__ import annotations

from django.apps import AppConfig


class WorkshopsConfig(AppConfig):
    name = "apps.workshops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.workshops import receivers  # noqa: F401  (registers them)
