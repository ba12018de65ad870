from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from apps.sharing.models import ShareLink, TeamEnvironment


class TeamEnvironmentSerializer(serializers.ModelSerializer):
    team: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    spec = serializers.CharField(source="full_spec", help_text='"provider/spec" as saved.')
    launch_spec = serializers.CharField(
        help_text="What a launch asks for: `spec` when following the branch, else the spec "
        "pinned to `resolved_ref`."
    )
    resolved_ref = serializers.CharField(
        help_text="The commit (or record version) the spec resolved to when last saved."
    )
    cpu = serializers.FloatField(allow_null=True, help_text="Cores; null: the quota's limit.")
    memory_bytes = serializers.IntegerField(
        allow_null=True, help_text="Bytes; null: the quota's limit."
    )
    created_by = serializers.CharField(source="created_by.username", default=None)
    links = serializers.SerializerMethodField()

    class Meta:
        model = TeamEnvironment
        fields = [
            "id", "team", "name", "provider", "spec", "follow_branch", "resolved_ref",
            "launch_spec", "urlpath", "cpu", "memory_bytes", "created_by", "created_at",
            "updated_at", "links",
        ]  # fmt: skip
        read_only_fields = fields

    def get_links(self, environment: TeamEnvironment) -> dict[str, str]:
        args = [environment.team.slug, environment.pk]
        return {"launch": reverse("api-team-environment-launch", args=args)}


class TeamEnvironmentInputSerializer(serializers.Serializer):
    """A PUT or POST names the repository (``spec``, or ``repo_url`` with ``ref``); a
    PATCH only what changes."""

    name = serializers.CharField(max_length=100)
    spec = serializers.CharField(
        required=False, max_length=2000, help_text='A mybinder spec such as "gh/org/repo/main".'
    )
    repo_url = serializers.CharField(required=False, max_length=2000)
    ref = serializers.CharField(required=False, max_length=255)
    follow_branch = serializers.BooleanField(
        required=False,
        help_text="true (default): launch the ref as it is at each launch; false: the commit "
        "it resolved to when saved.",
    )
    urlpath = serializers.CharField(required=False, allow_blank=True, max_length=1000)
    cpu = serializers.FloatField(
        required=False, allow_null=True, min_value=0.01, max_value=1024,
        help_text="Cores per session, within the team's limit.",
    )  # fmt: skip
    memory_bytes = serializers.IntegerField(
        required=False, allow_null=True, min_value=256 * 1024**2, max_value=2**50,
        help_text="Bytes per session, at least 268435456 (256 MiB), within the team's limit.",
    )  # fmt: skip

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not self.partial and bool(attrs.get("spec")) == bool(attrs.get("repo_url")):
            raise serializers.ValidationError("Give either spec or repo_url (with ref).")
        if self.partial and attrs.get("spec") and attrs.get("repo_url"):
            raise serializers.ValidationError("Give either spec or repo_url (with ref).")
        return attrs


class ShareLinkSerializer(serializers.ModelSerializer):
    team: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    spec = serializers.CharField(source="full_spec")
    status = serializers.CharField(
        read_only=True, help_text="`active`, `revoked` or `expired` (it answers 410 then)."
    )

    class Meta:
        model = ShareLink
        fields = [
            "id", "name", "provider", "spec", "urlpath", "audience", "team", "status",
            "created_at", "expires_at", "revoked_at", "uses", "last_used_at",
        ]  # fmt: skip
        read_only_fields = fields


class ShareLinkCreatedSerializer(ShareLinkSerializer):
    token = serializers.CharField(help_text="The link's secret: shown in this response only.")
    url = serializers.CharField(help_text="The page that launches it: /s/<token>.")

    class Meta(ShareLinkSerializer.Meta):
        fields = [*ShareLinkSerializer.Meta.fields, "token", "url"]
        read_only_fields = fields


class ShareLinkCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    session = serializers.IntegerField(
        required=False, help_text="Share what one of your sessions runs (its spec and path)."
    )
    spec = serializers.CharField(required=False, max_length=2000)
    repo_url = serializers.CharField(required=False, max_length=2000)
    ref = serializers.CharField(required=False, max_length=255, default="")
    urlpath = serializers.CharField(required=False, allow_blank=True, max_length=1000)
    audience = serializers.ChoiceField(
        choices=ShareLink.Audience.choices, default=ShareLink.Audience.SIGNED_IN
    )
    team = serializers.SlugField(required=False, help_text="For audience `team`: its slug.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [key for key in ("session", "spec", "repo_url") if attrs.get(key)]
        if len(given) != 1:
            raise serializers.ValidationError("Give one of session, spec or repo_url (with ref).")
        if attrs["audience"] == ShareLink.Audience.TEAM and not attrs.get("team"):
            raise serializers.ValidationError({"team": "Name the team to share with."})
        return attrs


class ShareLaunchSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=100, help_text="The secret of the link.")
