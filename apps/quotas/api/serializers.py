"""The usage and quota shapes, for the OpenAPI schema (bodies are read by the services)."""

from __future__ import annotations

from rest_framework import serializers


class LimitUsageSerializer(serializers.Serializer):
    name = serializers.ChoiceField(
        choices=["sessions", "cpu", "memory", "session_hours", "build_minutes", "storage",
                 "builds"])  # fmt: skip
    unit = serializers.ChoiceField(
        choices=["sessions", "cores", "bytes", "hours", "minutes", "builds"])  # fmt: skip
    used = serializers.FloatField(
        allow_null=True,
        help_text="In use now (sessions, builds; cores and bytes the running sessions hold; a "
        "volume's bytes) or this period (hours, minutes). Null for at-once limits of a past "
        "period.",
    )
    allowed = serializers.FloatField(allow_null=True, help_text="Null: unlimited.")
    left = serializers.FloatField(
        allow_null=True,
        help_text="allowed - used (never below 0); for per-session limits, what one more "
        "session may have. Null: unlimited.",
    )
    resets_at = serializers.DateTimeField(required=False, help_text="Monthly limits only.")
    per = serializers.ChoiceField(
        choices=["session", "volume"], required=False,
        help_text="Set for limits that bound one session (cpu, memory) or one volume (storage).",
    )  # fmt: skip


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    label = serializers.CharField(help_text="YYYY-MM")  # type: ignore[assignment]


class UsageSerializer(serializers.Serializer):
    period = PeriodSerializer()
    limits = LimitUsageSerializer(many=True)


class MemberUsageSerializer(serializers.Serializer):
    membership = serializers.IntegerField()
    user = serializers.DictField()
    role = serializers.CharField()
    limits = LimitUsageSerializer(many=True)


class TeamUsageSerializer(UsageSerializer):
    members = MemberUsageSerializer(many=True, required=False,
                                    help_text="With ?by=member (owners and admins).")  # fmt: skip


class QuotaSerializer(serializers.Serializer):
    """Limits by name, in the units of usage; null = unlimited. In a PUT, an omitted name is
    unchanged; the response holds every name's effective limit."""

    sessions = serializers.IntegerField(allow_null=True, required=False, min_value=0)
    cpu = serializers.FloatField(allow_null=True, required=False, help_text="Cores per session.")
    memory = serializers.IntegerField(allow_null=True, required=False,
                                      help_text="Bytes per session.")  # fmt: skip
    session_hours = serializers.FloatField(allow_null=True, required=False,
                                           help_text="Per calendar month.")  # fmt: skip
    build_minutes = serializers.FloatField(allow_null=True, required=False,
                                           help_text="Per calendar month.")  # fmt: skip
    storage = serializers.IntegerField(allow_null=True, required=False,
                                       help_text="Bytes per volume.")  # fmt: skip
    builds = serializers.IntegerField(allow_null=True, required=False, min_value=0)
