from __future__ import annotations

from rest_framework import serializers

from apps.teams.models import Invitation, Membership, Role, Team


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in the team.")

    class Meta:
        model = Team
        fields = ["id", "slug", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

    def get_role(self, team: Team) -> str | None:
        roles: dict[int, str] = self.context.get("roles", {})
        return roles.get(team.pk)


class TeamCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=50, required=False, allow_blank=True)


class TeamUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class MemberUserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    name = serializers.CharField(source="get_full_name")


class MembershipSerializer(serializers.ModelSerializer):
    user = MemberUserSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = fields


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = Invitation
        fields = [
            "id",
            "kind",
            "email",
            "role",
            "status",
            "created_by",
            "created_at",
            "expires_at",
            "max_uses",
            "uses",
            "revoked_at",
        ]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Invitation.Kind.choices, default=Invitation.Kind.EMAIL)
    email = serializers.EmailField(required=False)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    days = serializers.IntegerField(required=False, min_value=1, max_value=90, default=7)
    max_uses = serializers.IntegerField(required=False, min_value=1, allow_null=True)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if attrs["kind"] == Invitation.Kind.EMAIL and not attrs.get("email"):
            raise serializers.ValidationError({"email": ["An email invitation needs an email."]})
        return attrs


class InvitationCreatedSerializer(InvitationSerializer):
    url = serializers.CharField(help_text="The invite URL; shown only in this response.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "url"]
        read_only_fields = fields


class AcceptSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
