from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Volume(models.Model):
    """A persistent directory: a user's home volume or a team's shared volume."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="home_volume",
    )  # fmt: skip
    team = models.OneToOneField(
        "teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="volume"
    )
    created_at = models.DateTimeField(default=timezone.now)
    size_bytes = models.BigIntegerField(default=0)
    size_measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, team__isnull=True)
                | models.Q(user__isnull=True, team__isnull=False),
                name="volume_has_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"volume of {self.user or self.team}"

    @property
    def relative_path(self) -> str:
        """Where it lives under BINDERY_VOLUMES_DIR (derived from ids, never from names)."""
        return f"users/{self.user_id}" if self.user_id else f"teams/{self.team_id}"

    @property
    def label(self) -> str:
        return "Home" if self.user_id else f"Team {self.team}"


class Session(models.Model):
    """One running (or once running) Jupyter server: a named server on the hub."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        BUILDING = "building", "Building"
        LAUNCHING = "launching", "Launching"
        READY = "ready", "Ready"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.PENDING, Status.BUILDING, Status.LAUNCHING, Status.READY, Status.STOPPING)
    RUNNING = (Status.LAUNCHING, Status.READY)
    TERMINAL = (Status.STOPPED, Status.FAILED)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="launches",
    )  # fmt: skip
    # Anonymous launches (BINDERY_ANONYMOUS_LAUNCH): the visitor's browser session owns it.
    anonymous_owner = models.CharField(max_length=64, blank=True, db_index=True)
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="launches"
    )
    build = models.ForeignKey("builds.Build", on_delete=models.PROTECT, related_name="sessions")
    # A workshop's seat (apps.workshops): a warm server waiting for an attendee, or one's.
    workshop = models.ForeignKey(
        "workshops.Workshop", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="sessions",
    )  # fmt: skip
    hub_user = models.CharField(max_length=64)
    provider = models.CharField(max_length=20)
    spec = models.CharField(max_length=1000)
    urlpath = models.CharField(max_length=1000, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True, help_text="For people.")
    error = models.TextField(blank=True, help_text="For operators.")

    url = models.CharField(max_length=2000, blank=True, help_text="Without the token.")
    token_encrypted = models.TextField(blank=True)
    token_id = models.CharField(max_length=64, blank=True)
    environment_key = models.CharField(max_length=64, blank=True, db_index=True)
    memory_bytes = models.BigIntegerField(default=0)
    max_processes = models.PositiveIntegerField(default=0)
    cpu = models.FloatField(null=True, blank=True, help_text="CPU limit in cores; None: none.")

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    launch_started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_activity = models.DateTimeField(null=True, blank=True)
    keepalive_at = models.DateTimeField(null=True, blank=True)
    # A hot server (apps.sessions.hot): started ahead for whoever launches its environment
    # next, not anyone's yet.
    spare = models.BooleanField(default=False)
    # A server started ahead of its owner (a workshop's warm seat, a hot server) became
    # theirs here: its age counts from then.
    handed_over_at = models.DateTimeField(null=True, blank=True)
    events_size = models.PositiveIntegerField(default=0)
    # The usage ledger holds this session's running time up to here (apps.quotas.ledger).
    accounted_until = models.DateTimeField(null=True, blank=True)
    # When it was told its month's session hours run out (once).
    quota_warned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Session {self.pk} ({self.status})"

    @property
    def server_name(self) -> str:
        """The hub's named server: derived from the id, DNS-safe."""
        from apps.sessions.hub import server_name_for

        return server_name_for(self.pk)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def launch_seconds(self) -> float | None:
        if self.ready_at:
            return (self.ready_at - self.created_at).total_seconds()
        return None


class SessionEvent(models.Model):
    """A step of a launch (mybinder phase + message), replayed to late listeners."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="events")
    n = models.PositiveIntegerField()
    phase = models.CharField(max_length=12)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "n"]
        constraints = [models.UniqueConstraint(fields=["session", "n"], name="one_event_per_n")]

    def __str__(self) -> str:
        return f"{self.session_id}:{self.n} {self.phase}"
