from __future__ import annotations

from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "apps.quotas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.quotas import checks, receivers  # noqa: F401  (registers them)
