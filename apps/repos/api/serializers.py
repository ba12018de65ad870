from __future__ import annotations

from rest_framework import serializers

from apps.repos.models import Credential
from apps.teams.models import Team


class CredentialSerializer(serializers.ModelSerializer):
    """A stored credential's metadata. The token is never part of any response."""

    owner = serializers.CharField(source="owner_kind", help_text='"user" or "team".')
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    created_by = serializers.CharField(source="created_by.username", default=None)
    can_delete = serializers.SerializerMethodField(
        help_text="Whether you may delete it (yours, or your team's as owner or admin)."
    )

    class Meta:
        model = Credential
        fields = [
            "id",
            "host",
            "username",
            "label",
            "owner",
            "team",
            "created_by",
            "created_at",
            "last_used_at",
            "can_delete",
        ]
        read_only_fields = fields

    def get_can_delete(self, credential: Credential) -> bool:
        if credential.user_id is not None:
            return True
        roles: dict[int, str] = self.context.get("roles", {})
        return roles.get(credential.team_id or 0) in ("owner", "admin")


class CredentialCreateSerializer(serializers.Serializer):
    host = serializers.CharField(
        max_length=300, help_text="host or host:port, e.g. github.com or git.example.org:8443"
    )
    username = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default="", trim_whitespace=True
    )
    token = serializers.CharField(
        max_length=4096,
        write_only=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="The secret (a personal access token). Stored encrypted; never shown again.",
    )
    label = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.label
        max_length=100, required=False, allow_blank=True, default=""
    )
    team = serializers.SlugField(
        max_length=50,
        required=False,
        allow_blank=True,
        default="",
        help_text="Slug of a team you own or administer, to share the credential with it.",
    )
