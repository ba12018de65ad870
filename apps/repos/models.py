"""Stored credentials for private repositories.

A credential belongs to exactly one user or one team (a database constraint). Its token is
encrypted at rest (``apps.repos.crypto``: Fernet, keys from BINDERY_ENCRYPTION_KEYS) and is
only ever decrypted to hand it to git through GIT_ASKPASS.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class Credential(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="git_credentials",
    )
    team = models.ForeignKey(
        "teams.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="git_credentials",
    )
    host = models.CharField(max_length=255, help_text="host or host:port, lower case")
    username = models.CharField(max_length=255, blank=True)
    encrypted_token = models.TextField(help_text="Fernet token; never the secret itself")
    label = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "created_at", "id"]
        indexes = [models.Index(fields=["host"], name="repos_credential_host")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, team__isnull=True)
                    | models.Q(user__isnull=True, team__isnull=False)
                ),
                name="credential_owned_by_user_xor_team",
            ),
            models.CheckConstraint(
                condition=models.Q(host=Lower("host")), name="credential_host_lower_case"
            ),
        ]

    def __str__(self) -> str:
        owner = f"team {self.team_id}" if self.team_id else f"user {self.user_id}"
        return f"{self.label or self.host} ({owner})"

    @property
    def owner_kind(self) -> str:
        return "team" if self.team_id else "user"
