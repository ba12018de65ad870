from __future__ import annotations

from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "apps.builds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.builds import checks  # noqa: F401 - registers the sandbox check
