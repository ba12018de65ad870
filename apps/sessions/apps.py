from __future__ import annotations

from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "apps.sessions"
    label = "launches"  # Django's own "sessions" label is taken
    verbose_name = "Sessions"
    default_auto_field = "django.db.models.BigAutoField"
