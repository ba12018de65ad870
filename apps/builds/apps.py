from __future__ import annotations

from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "apps.builds"
    default_auto_field = "django.db.models.BigAutoField"
