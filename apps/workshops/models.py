"""Workshops: an instructor's pinned, pre-built environment with a join code, a window,
seats, and the attendees seated in them (see docs/architecture.md "workshops")."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

# Join codes: no characters a person could misread or mistype (0/O, 1/I/L, 2/Z, 5/S, 8/B,
# 6/G), upper case only; six of them are 22**6 ≈ 113 million codes.
CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"
CODE_LENGTH = 6


class Workshop(models.Model):
    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        FAILED = "failed", "Build failed"
        SCHEDULED = "scheduled", "Scheduled"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workshops"
    )
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="workshops"
    )
    # The environment, pinned: ``spec`` names the commit resolved at creation (or at the last
    # "update to the latest commit"); ``ref`` is what the instructor asked for.
    provider = models.CharField(max_length=20)
    spec = models.CharField(max_length=1000)
    repo_url = models.CharField(max_length=1000)
    ref = models.CharField(max_length=255)
    resolved_ref = models.CharField(max_length=200)
    display_name = models.CharField(max_length=300)
    urlpath = models.CharField(max_length=1000, blank=True)
    build = models.ForeignKey(
        "builds.Build", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The window, and the time zone it was given in (for display).
    opens_at = models.DateTimeField()
    closes_at = models.DateTimeField()
    time_zone = models.CharField(max_length=64, default="UTC")
    closed_at = models.DateTimeField(null=True, blank=True, help_text="Closed (early or on time).")
    close_warned_at = models.DateTimeField(null=True, blank=True)
    # Seats and what each may use.
    seats = models.PositiveIntegerField()
    cpu = models.FloatField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    session_minutes = models.PositiveIntegerField(default=120)
    # Who may join.
    guests = models.BooleanField(default=False, help_text="Join with a display name only.")
    email_domains = models.CharField(
        max_length=500, blank=True, help_text="Signed-in attendees only from these domains."
    )
    team_members_only = models.BooleanField(default=False)
    mount_volumes = models.BooleanField(default=False, help_text="Attendees' own volumes.")
    code = models.CharField(max_length=16, unique=True)
    code_rotated_at = models.DateTimeField(null=True, blank=True)
    build_failure_notified = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-opens_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(closes_at__gt=models.F("opens_at")),
                                   name="workshop_closes_after_it_opens"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.title

    @property
    def status(self) -> str:
        now = timezone.now()
        if self.closed_at is not None or now >= self.closes_at:
            return self.Status.CLOSED
        if self.build is None or self.build.status in ("pending", "running"):
            return self.Status.BUILDING
        if self.build.status != "ready":
            return self.Status.FAILED
        if now < self.opens_at:
            return self.Status.SCHEDULED
        return self.Status.OPEN

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None or timezone.now() >= self.closes_at

    @property
    def warm_from(self) -> datetime:
        return self.opens_at - timedelta(seconds=settings.BINDERY_WORKSHOP_WARM_LEAD)

    @property
    def domains(self) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in self.email_domains.split(",") if d.strip()]


class Seat(models.Model):
    """One attendee's seat: a signed-in user's, or a guest's (known by the digest of the
    guest's secret, kept in their browser). A person rejoining gets the same seat."""

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="seat_set")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="workshop_seats",
    )  # fmt: skip
    guest_digest = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=100)
    joined_at = models.DateTimeField(default=timezone.now)
    session = models.OneToOneField(
        "launches.Session", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="seat",
    )  # fmt: skip
    ends_at = models.DateTimeField(null=True, blank=True, help_text="When its session stops.")

    class Meta:
        ordering = ["joined_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workshop", "user"],
                                    condition=models.Q(user__isnull=False),
                                    name="one_seat_per_user"),
            models.UniqueConstraint(fields=["workshop", "guest_digest"],
                                    condition=~models.Q(guest_digest=""),
                                    name="one_seat_per_guest"),
            models.CheckConstraint(condition=models.Q(user__isnull=False)
                                   | ~models.Q(guest_digest=""), name="seat_has_one_owner"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.name} in {self.workshop}"

    @property
    def is_guest(self) -> bool:
        return self.user_id is None
