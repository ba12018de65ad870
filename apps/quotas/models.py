from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Quota(models.Model):
    """One level's limits (see ``apps.quotas.limits``): a user's (set by staff), a team's
    pool (set by its admins), a team's ceiling (set by staff) or a member's cap within a
    team (set by the team's admins). ``values`` maps a limit name to a number or None
    (unlimited at this level); a name it does not hold takes the site's default."""

    class Scope(models.TextChoices):
        USER = "user", "User"
        TEAM = "team", "Team pool"
        CEILING = "ceiling", "Team ceiling"
        MEMBER = "member", "Member cap"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="quotas",
    )  # fmt: skip
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="quotas"
    )
    membership = models.ForeignKey(
        "teams.Membership", null=True, blank=True, on_delete=models.CASCADE,
        related_name="quotas",
    )  # fmt: skip
    values = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "user"], condition=models.Q(scope="user"),
                                    name="one_quota_per_user"),
            models.UniqueConstraint(fields=["scope", "team"],
                                    condition=models.Q(scope__in=["team", "ceiling"]),
                                    name="one_quota_per_team_scope"),
            models.UniqueConstraint(fields=["scope", "membership"],
                                    condition=models.Q(scope="member"),
                                    name="one_quota_per_membership"),
            models.CheckConstraint(
                condition=(models.Q(scope="user", user__isnull=False, team__isnull=True,
                                    membership__isnull=True)
                           | models.Q(scope__in=["team", "ceiling"], user__isnull=True,
                                      team__isnull=False, membership__isnull=True)
                           | models.Q(scope="member", user__isnull=True, team__isnull=True,
                                      membership__isnull=False)),
                name="quota_has_one_owner",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        owner = self.user or self.team or self.membership
        return f"{self.get_scope_display()} of {owner}"


class UsageRecord(models.Model):
    """One row of the usage ledger: append-only, one row per (what, interval).

    ``session``: ``quantity`` seconds a session ran within one clock minute (``start`` …
    ``end``), written each minute by beat and at stop. ``build``: the seconds one build ran,
    written when it ends (a reused environment costs nothing: no build, no row).
    ``storage``: the bytes a volume held when measured (``quantity``), on a schedule and
    at stop. ``key`` makes every write idempotent: a retried or repeated write of the same
    interval is ignored, so a killed worker or a restarted beat neither loses nor doubles.
    ``period`` is the first day of the month (site time zone) the interval falls in.
    """

    class Kind(models.TextChoices):
        SESSION = "session", "Session time"
        BUILD = "build", "Build time"
        STORAGE = "storage", "Storage"

    class Scope(models.TextChoices):
        PERSONAL = "personal", "Personal"
        TEAM = "team", "Team"

    key = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Whose pool the row counts against; kept when a team is deleted (team becomes null), so
    # its use never turns into its members' personal use.
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.PERSONAL)
    period = models.DateField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    quantity = models.FloatField()
    cpu = models.FloatField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="usage_records",
    )  # fmt: skip
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="usage_records",
    )  # fmt: skip
    anonymous_owner = models.CharField(max_length=64, blank=True)
    session = models.ForeignKey(
        "launches.Session", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="usage_records",
    )  # fmt: skip
    build = models.ForeignKey(
        "builds.Build", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="usage_records",
    )  # fmt: skip
    volume = models.ForeignKey(
        "launches.Volume", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="usage_records",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["start", "id"]
        indexes = [
            models.Index(fields=["kind", "period", "scope", "user", "team"], name="usage_by_owner"),
            models.Index(fields=["kind", "period", "team"], name="usage_by_team"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.quantity:g} at {self.start:%Y-%m-%d %H:%M}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise RuntimeError("The usage ledger is append-only.")
        super().save(*args, **kwargs)
