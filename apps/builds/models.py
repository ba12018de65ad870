from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Build(models.Model):
    """One build of a repository at a resolved version. The row is the truth."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Phase(models.TextChoices):
        WAITING = "waiting", "Waiting"
        FETCHING = "fetching", "Fetching"
        BUILDING = "building", "Building"
        BUILT = "built", "Built"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.PENDING, Status.RUNNING)
    TERMINAL = (Status.READY, Status.FAILED, Status.CANCELLED)

    # What was asked for, and what it resolved to (ResolvedRepo as JSON).
    provider = models.CharField(max_length=20)
    spec = models.CharField(max_length=1000)
    repo_url = models.CharField(max_length=1000)
    repo_slug = models.CharField(max_length=64, db_index=True)
    display_name = models.CharField(max_length=300)
    resolved_ref = models.CharField(max_length=200)
    resolved = models.JSONField()
    # Builds of the same repo, version and scope share one row while active (see services).
    build_key = models.CharField(max_length=64, db_index=True)
    # Empty for public repositories; for private ones the credential's scope, so that
    # a private build and its environment are never handed to anyone else.
    scope = models.CharField(max_length=64, blank=True)
    credential = models.ForeignKey(
        "repos.Credential", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="builds",
    )  # fmt: skip
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="builds"
    )

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.WAITING)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True, help_text="For people.")
    error = models.TextField(blank=True, help_text="For operators.")
    cancel_requested = models.BooleanField(default=False)

    environment_key = models.CharField(max_length=64, blank=True, db_index=True)
    result = models.JSONField(null=True, blank=True)  # BuildResult as JSON once ready

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    log_size = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["build_key"],
                condition=models.Q(status__in=["pending", "running"]),
                name="one_active_build_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"Build {self.pk} of {self.display_name}@{self.resolved_ref[:12]} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_private(self) -> bool:
        return bool(self.scope)

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class BuildLogLine(models.Model):
    """One line of a build's log, already redacted. ``n`` counts from 1 per build."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="log_lines")
    n = models.PositiveIntegerField()
    phase = models.CharField(max_length=10)
    stream = models.CharField(max_length=6, default="stdout")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["build", "n"]
        constraints = [
            models.UniqueConstraint(fields=["build", "n"], name="one_log_line_per_number")
        ]

    def __str__(self) -> str:
        return f"{self.build_id}:{self.n} {self.text[:60]}"
