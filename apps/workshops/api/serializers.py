"""Workshops over the API: the instructor's workshop and roster, and what an attendee (a
guest above all) gets back from joining."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.builds.models import Build
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.services import session_memory_used
from apps.teams.api.serializers import MemberUserSerializer
from apps.workshops import services
from apps.workshops.models import Seat, Workshop


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time with its offset: a naive one is refused, not read in the server's
    time zone (an instructor in Tokyo would otherwise open at the wrong hour)."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(
                "Give the time with its offset (ISO 8601), e.g. 2030-05-01T09:00:00+02:00."
            )
        return super().enforce_timezone(value)


class WorkshopBuildSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="The build in the API (its log, events).")

    class Meta:
        model = Build
        fields = ["id", "status", "phase", "error_message", "url"]
        read_only_fields = fields

    def get_url(self, build: Build) -> str:
        return reverse("api-build", args=[build.pk])


class WarmSerializer(serializers.Serializer):
    ready = serializers.IntegerField(help_text="Unclaimed servers running now.")
    starting = serializers.IntegerField(help_text="Unclaimed servers starting.")


class WorkshopSerializer(serializers.ModelSerializer):
    team: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    status = serializers.ChoiceField(choices=Workshop.Status.choices, read_only=True)
    join_url = serializers.SerializerMethodField(help_text="The link attendees open.")
    build = WorkshopBuildSerializer(read_only=True, allow_null=True)
    seats_taken = serializers.SerializerMethodField()
    warm = serializers.SerializerMethodField()
    memory = serializers.IntegerField(
        source="memory_bytes", allow_null=True, read_only=True,
        help_text="Memory per seat in bytes; null: the site's default.",
    )  # fmt: skip
    links = serializers.SerializerMethodField()

    class Meta:
        model = Workshop
        fields = [
            "id", "title", "team", "code", "join_url", "status", "build", "seats",
            "seats_taken", "warm", "opens_at", "closes_at", "closed_at", "time_zone",
            "session_minutes", "cpu", "memory", "guests", "email_domains", "team_members_only",
            "mount_volumes", "provider", "spec", "repo_url", "ref", "resolved_ref",
            "display_name", "urlpath", "code_rotated_at", "created_at", "links",
        ]  # fmt: skip
        read_only_fields = fields

    def get_join_url(self, workshop: Workshop) -> str:
        return settings.SITE_URL + reverse("workshop-join", args=[workshop.code])

    def get_seats_taken(self, workshop: Workshop) -> int:
        taken = getattr(workshop, "taken", None)  # annotated on lists (one query for all)
        return int(taken) if taken is not None else workshop.seat_set.count()

    @staticmethod
    def _warm(workshop: Workshop) -> dict[str, int]:
        counted = getattr(workshop, "warm_ready", None)  # annotated on lists
        if counted is not None:
            return {"ready": counted, "starting": getattr(workshop, "warm_starting", 0)}
        return services.warm_counts(workshop)

    @extend_schema_field(WarmSerializer)
    def get_warm(self, workshop: Workshop) -> dict[str, int]:
        return self._warm(workshop)

    def get_links(self, workshop: Workshop) -> dict[str, str]:
        return {
            "self": reverse("api-workshop", args=[workshop.pk]),
            "roster": reverse("api-workshop-roster", args=[workshop.pk]),
            "page": reverse("workshop", args=[workshop.pk]),
        }


class WorkshopCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    spec = serializers.CharField(
        required=False, max_length=2000, help_text='A mybinder spec such as "gh/org/repo/main".'
    )
    repo_url = serializers.CharField(required=False, max_length=2000)
    ref = serializers.CharField(required=False, max_length=255, default="HEAD",
                                help_text="Pinned to the commit it names now.")  # fmt: skip
    opens_at = AwareDateTimeField()
    closes_at = AwareDateTimeField()
    time_zone = serializers.CharField(
        required=False, max_length=64, default="UTC",
        help_text="Shown to attendees, e.g. Europe/Berlin.",
    )  # fmt: skip
    seats = serializers.IntegerField(help_text=f"1 to {services.MAX_SEATS}.")
    guests = serializers.BooleanField(default=False, help_text="Join with a name only.")
    team = serializers.SlugField(required=False, help_text="A team you own or administer.")
    urlpath = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    cpu = serializers.FloatField(required=False, allow_null=True, min_value=0.01,
                                 max_value=1024, help_text="Cores per seat.")  # fmt: skip
    memory = serializers.IntegerField(required=False, allow_null=True, min_value=256 * 1024**2,
                                      max_value=2**50, help_text="Bytes per seat.")  # fmt: skip
    session_minutes = serializers.IntegerField(required=False, default=120)
    email_domains = serializers.CharField(
        required=False, allow_blank=True, max_length=500, default="",
        help_text="Only signed-in attendees at these domains, comma-separated.",
    )  # fmt: skip
    team_members_only = serializers.BooleanField(default=False)
    mount_volumes = serializers.BooleanField(default=False,
                                             help_text="Mount attendees' own volumes.")  # fmt: skip

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("spec")) == bool(attrs.get("repo_url")):
            raise serializers.ValidationError("Give either spec or repo_url (with ref).")
        return attrs


class WorkshopUpdateSerializer(serializers.Serializer):
    """Only the fields sent change (``services.update_workshop``)."""

    title = serializers.CharField(required=False, max_length=200)
    opens_at = AwareDateTimeField(required=False)
    closes_at = AwareDateTimeField(required=False)
    seats = serializers.IntegerField(required=False, help_text="Never fewer than are taken.")
    session_minutes = serializers.IntegerField(required=False)
    guests = serializers.BooleanField(required=False)
    email_domains = serializers.CharField(required=False, allow_blank=True, max_length=500)
    team_members_only = serializers.BooleanField(required=False)
    time_zone = serializers.CharField(required=False, max_length=64)


class StopAllSerializer(serializers.Serializer):
    stopped = serializers.IntegerField(help_text="Sessions asked to stop.")


class SeatSerializer(serializers.ModelSerializer):
    """A roster row: one attendee's seat and its server."""

    seat = serializers.IntegerField(source="pk", read_only=True)
    user = MemberUserSerializer(read_only=True, allow_null=True,
                                help_text="The signed-in attendee; null for a guest.")  # fmt: skip
    guest = serializers.BooleanField(source="is_guest", read_only=True)
    session = serializers.IntegerField(source="session_id", read_only=True, allow_null=True)
    status = serializers.SerializerMethodField(
        help_text="The session's status; `left` when the seat no longer has one."
    )
    last_activity = serializers.SerializerMethodField()
    memory_used = serializers.SerializerMethodField(
        help_text="Bytes the running server uses now; null unless it is ready."
    )
    memory_bytes = serializers.SerializerMethodField(help_text="The server's memory limit.")

    class Meta:
        model = Seat
        fields = ["seat", "name", "guest", "user", "session", "status", "joined_at",
                  "ends_at", "last_activity", "memory_used", "memory_bytes"]  # fmt: skip
        read_only_fields = fields

    def get_status(self, seat: Seat) -> str:
        return seat.session.status if seat.session is not None else "left"

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_activity(self, seat: Seat) -> str | None:
        session = seat.session
        if session is None or session.last_activity is None:
            return None
        return serializers.DateTimeField().to_representation(session.last_activity)

    def get_memory_used(self, seat: Seat) -> int | None:
        return session_memory_used(seat.session) if seat.session is not None else None

    def get_memory_bytes(self, seat: Seat) -> int | None:
        return seat.session.memory_bytes if seat.session is not None else None


class JoinSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=64, help_text="The join code (case and dashes "
                                 "do not matter).")  # fmt: skip
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="",
                                 help_text="Display name (guests must give one).")  # fmt: skip
    guest_token = serializers.CharField(
        required=False, allow_blank=True, max_length=128, default="",
        help_text="The `guest_token` a first join returned: the same seat back.",
    )  # fmt: skip


class JoinStatusQuerySerializer(serializers.Serializer):
    code = serializers.CharField(max_length=64)
    guest_token = serializers.CharField(
        required=False, allow_blank=True, max_length=128, default="",
        help_text="The guest's token (a signed-in caller may leave it out).",
    )  # fmt: skip


class JoinedSeatSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class JoinedWorkshopSerializer(serializers.Serializer):
    code = serializers.CharField()
    title = serializers.CharField()
    closes_at = serializers.DateTimeField()


class JoinedSerializer(serializers.Serializer):
    """What joining returns: the session as ``/api/v1/sessions/{id}/`` shows it, and what a
    guest needs to open it without an account."""

    session = SessionSerializer()
    guest_token = serializers.CharField(
        allow_null=True,
        help_text="The guest's secret: send it to rejoin (same seat) and to poll "
        "`status_url`. Keep it private. Null for a signed-in attendee.",
    )
    seat = JoinedSeatSerializer()
    workshop = JoinedWorkshopSerializer()
    warm = serializers.BooleanField(help_text="The seat's server is a pre-warmed one.")
    time_left = serializers.IntegerField(help_text="Seconds until the session ends.")
    open_url = serializers.CharField(
        allow_null=True,
        help_text="The server's URL with its token once the session is ready; null while "
        "it starts (poll `status_url`).",
    )
    status_url = serializers.CharField(
        help_text="Poll for `open_url`: a guest adds `guest_token`; for a signed-in "
        "attendee it is the session in the API."
    )
