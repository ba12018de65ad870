"""Environments kept for a team, and share links to an environment.

Both hold what a launch takes (``provider``/``spec``, as ``sessions.services.launch`` reads
``spec="provider/spec"``, and a ``urlpath``), never a credential: whoever launches resolves
the repository with their own credentials (and, for a team launch, the team's).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.teams.models import Team

MIN_MEMORY_BYTES = 256 * 1024**2


class TeamEnvironment(models.Model):
    """An environment a team's admins keep for its members to launch in one click.

    ``follow_branch``: launch the ref as it is at each launch; otherwise the commit it
    resolved to when saved (``pinned_spec``, the resolution's persistent spec)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=20)
    spec = models.CharField(max_length=1000)  # without the provider prefix
    follow_branch = models.BooleanField(default=True)
    resolved_ref = models.CharField(max_length=200, blank=True)  # when last saved
    pinned_spec = models.CharField(max_length=1100, blank=True)  # provider/spec at that commit
    urlpath = models.CharField(max_length=1000, blank=True)
    cpu = models.FloatField(null=True, blank=True)  # cores; None: the quota's limit
    memory_bytes = models.BigIntegerField(null=True, blank=True)  # None: the quota's limit
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.team})"

    @property
    def full_spec(self) -> str:
        return f"{self.provider}/{self.spec}"

    @property
    def launch_spec(self) -> str:
        """What a launch of it asks for: the ref as it is now, or the pinned commit."""
        if not self.follow_branch and self.pinned_spec:
            return self.pinned_spec
        return self.full_spec


class ShareLink(models.Model):
    """A link to one environment, for signed-in people or for one team's members.

    Only the SHA-256 digest of its secret is stored; the secret is shown once."""

    class Audience(models.TextChoices):
        SIGNED_IN = "signed_in", "Anyone signed in"
        TEAM = "team", "Members of one team"

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links"
    )
    name = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=20)
    spec = models.CharField(max_length=1000)  # without the provider prefix
    urlpath = models.CharField(max_length=1000, blank=True)
    audience = models.CharField(max_length=10, choices=Audience.choices)
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links"
    )
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(audience="signed_in", team__isnull=True)
                | models.Q(audience="team", team__isnull=False),
                name="share_link_team_iff_team_audience",
            )
        ]

    def __str__(self) -> str:
        return f"share link {self.pk} to {self.full_spec}"

    @property
    def full_spec(self) -> str:
        return f"{self.provider}/{self.spec}"

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"
