from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from apps.builds.models import Build


class ReceiptSerializer(serializers.Serializer):
    """What a ready build produced."""

    environment_key = serializers.CharField()
    python_version = serializers.CharField()
    config_files = serializers.ListField(child=serializers.CharField())
    packages = serializers.ListField(child=serializers.DictField())
    warnings = serializers.ListField(child=serializers.CharField())
    reused = serializers.BooleanField()
    start_script = serializers.CharField()
    durations = serializers.DictField(child=serializers.FloatField())


def receipt_for(build: Build) -> dict[str, Any] | None:
    result = build.result
    if not result:
        return None
    return {
        "environment_key": result.get("environment_key", ""),
        "python_version": result.get("python_version", ""),
        "config_files": list(result.get("config_files", [])),
        "packages": [{"name": n, "version": v} for n, v in result.get("packages", [])],
        "warnings": list(result.get("warnings", [])),
        "reused": bool(result.get("reused")),
        "start_script": result.get("start_script", ""),
        # the steps that took time; "total" is the build's duration
        "durations": {
            step: seconds
            for step, seconds in result.get("durations", {}).items()
            if step != "total" and seconds >= 0.05
        },
    }


class BuildSerializer(serializers.ModelSerializer):
    private = serializers.BooleanField(source="is_private")
    persistent_spec = serializers.SerializerMethodField()
    ref_url = serializers.SerializerMethodField()
    duration = serializers.FloatField(allow_null=True)
    requested_by_me = serializers.SerializerMethodField()
    receipt = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Build
        fields = [
            "id", "status", "phase", "provider", "spec", "repo_url", "display_name",
            "resolved_ref", "persistent_spec", "ref_url", "private", "environment_key",
            "error_code", "error_message", "created_at", "started_at", "finished_at",
            "duration", "log_size", "requested_by_me", "receipt", "links",
        ]  # fmt: skip
        read_only_fields = fields

    def get_persistent_spec(self, build: Build) -> str:
        return str(build.resolved.get("persistent_spec", ""))

    def get_ref_url(self, build: Build) -> str:
        return str(build.resolved.get("ref_url", ""))

    def get_requested_by_me(self, build: Build) -> bool:
        request = self.context.get("request")
        return bool(request and build.requested_by_id == request.user.pk)

    def get_receipt(self, build: Build) -> dict[str, Any] | None:
        return receipt_for(build)

    def get_links(self, build: Build) -> dict[str, str]:
        return {
            "page": reverse("build", args=[build.pk]),
            "log": reverse("api-build-log", args=[build.pk]),
            "events": reverse("api-build-events", args=[build.pk]),
            "websocket": f"/ws/builds/{build.pk}/",
        }


class BuildCreateSerializer(serializers.Serializer):
    spec = serializers.CharField(
        required=False, max_length=2000,
        help_text='A mybinder spec: "gh/org/repo/ref", "gl/group%2Frepo/main", "zenodo/...".',
    )  # fmt: skip
    repo_url = serializers.CharField(required=False, max_length=2000)
    ref = serializers.CharField(required=False, max_length=255, default="HEAD")
    team = serializers.SlugField(required=False, help_text="Use this team's credentials.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("spec")) == bool(attrs.get("repo_url")):
            raise serializers.ValidationError("Give either spec or repo_url (with ref).")
        return attrs


class LogLineSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    phase = serializers.CharField()
    stream = serializers.CharField()
    text = serializers.CharField()
