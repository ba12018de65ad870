from __future__ import annotations

from django.conf import settings
from django.db import models


class QuotaPolicy(models.Model):
    """Limits for a user or a team; when neither has a policy the settings' defaults apply."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="quota",
    )  # fmt: skip
    team = models.OneToOneField(
        "teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    max_sessions = models.PositiveIntegerField(help_text="Sessions running at once.")
    memory_bytes = models.BigIntegerField(help_text="Memory per session.")

    class Meta:
        verbose_name_plural = "quota policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, team__isnull=True)
                | models.Q(user__isnull=True, team__isnull=False),
                name="quota_has_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"quota of {self.user or self.team}"
