from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.sessions.models import Session, Volume
from apps.sessions.services import session_memory_used, volume_offer
from apps.teams.api.serializers import MemberUserSerializer

# A number no other part of a URL holds: where a link's id goes (SessionSerializer._link).
_MARK = 918273645546372819


class SessionSerializer(serializers.ModelSerializer):
    """A session. Lists read only the columns this shows (selectors.listed): a field that
    reads another column needs it added there."""

    phase = serializers.SerializerMethodField(help_text="mybinder phase of the launch.")
    idle_seconds = serializers.SerializerMethodField()
    launch_seconds = serializers.FloatField(allow_null=True)
    team: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    memory_used = serializers.SerializerMethodField(
        help_text="Bytes the running server uses now (its working set: resident memory and "
        "tmpfs, not the reclaimable file cache), against the limit `memory_bytes`; null when "
        "the session is not running or its use cannot be read."
    )
    links = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = [
            "id", "status", "phase", "provider", "spec", "urlpath", "url", "build", "team",
            "error_code", "error_message", "memory_bytes", "memory_used", "cpu", "created_at",
            "ready_at", "stopped_at", "last_activity", "idle_seconds", "launch_seconds", "links",
        ]  # fmt: skip
        read_only_fields = fields

    def to_representation(self, session: Session) -> dict[str, Any]:
        """``Meta.fields`` as ``ModelSerializer.to_representation`` gives them, without its
        per-field machinery: a list of 100 spent most of its time there (a timezone lookup
        per date, an attribute walk per field). apps/sessions/tests/test_serializers.py
        holds the two equal on every kind of row; a field added to ``Meta.fields`` must be
        added here too (that test fails until it is)."""
        zone = self.__dict__.get("_zone")
        if zone is None:
            zone = self.__dict__["_zone"] = timezone.get_current_timezone()

        def when(value: Any) -> str | None:
            if not value:
                return None
            text: str = value.astimezone(zone).isoformat()
            return text[:-6] + "Z" if text.endswith("+00:00") else text

        def number(value: Any, kind: type) -> Any:
            return None if value is None else kind(value)

        launch, team = session.launch_seconds, session.team
        return {
            "id": session.pk,
            "status": session.status,
            "phase": self.get_phase(session),
            "provider": session.provider,
            "spec": session.spec,
            "urlpath": session.urlpath,
            "url": session.url,
            "build": session.build_id,
            "team": team.slug if team is not None else None,
            "error_code": session.error_code,
            "error_message": session.error_message,
            "memory_bytes": number(session.memory_bytes, int),
            "memory_used": self.get_memory_used(session),
            "cpu": number(session.cpu, float),
            "created_at": when(session.created_at),
            "ready_at": when(session.ready_at),
            "stopped_at": when(session.stopped_at),
            "last_activity": when(session.last_activity),
            "idle_seconds": self.get_idle_seconds(session),
            "launch_seconds": None if launch is None else float(launch),
            "links": self.get_links(session),
        }

    def get_phase(self, session: Session) -> str:
        if session.status == Session.Status.BUILDING:
            build_phase = session.build.phase
            return "waiting" if build_phase == "waiting" else build_phase
        return {
            Session.Status.PENDING: "waiting",
            Session.Status.LAUNCHING: "launching",
            Session.Status.READY: "ready",
            Session.Status.FAILED: "failed",
        }.get(Session.Status(session.status), str(session.status))

    def get_idle_seconds(self, session: Session) -> float | None:
        if session.status != Session.Status.READY:
            return None
        seen = [t for t in (session.last_activity, session.keepalive_at, session.ready_at) if t]
        return round((timezone.now() - max(seen)).total_seconds(), 1) if seen else None

    def get_memory_used(self, session: Session) -> int | None:
        return session_memory_used(session)

    def get_links(self, session: Session) -> dict[str, str]:
        return {
            "page": self._link("session-launch", session.pk),
            "open": self._link("session-open", session.pk),
            "events": self._link("api-session-events", session.pk),
            "websocket": f"/ws/launches/{session.pk}/",
            "build": self._link("api-build", session.build_id),
        }

    def _link(self, name: str, pk: int) -> str:
        """``reverse(name, args=[pk])``, reversed once per serializer (the rows of a list
        share theirs): four reverse() calls were the costliest part of a row."""
        templates: dict[str, tuple[str, str]] = self.__dict__.setdefault("_link_templates", {})
        if name not in templates:
            head, mark, tail = reverse(name, args=[_MARK]).partition(str(_MARK))
            templates[name] = (head, tail) if mark else ("", "")
        head, tail = templates[name]
        return f"{head}{pk}{tail}" if head else reverse(name, args=[pk])


class TeamSessionSerializer(SessionSerializer):
    """A session as the team's owners and admins see it: with whose it is."""

    user = MemberUserSerializer(read_only=True, help_text="Who launched it.")

    class Meta(SessionSerializer.Meta):
        fields = [*SessionSerializer.Meta.fields, "user"]
        read_only_fields = fields

    def to_representation(self, session: Session) -> dict[str, Any]:
        data = super().to_representation(session)
        user = session.user
        data["user"] = None if user is None else self.fields["user"].to_representation(user)
        return data


class SessionCreateSerializer(serializers.Serializer):
    spec = serializers.CharField(
        required=False, max_length=2000, help_text='A mybinder spec such as "gh/org/repo/main".'
    )
    repo_url = serializers.CharField(required=False, max_length=2000)
    ref = serializers.CharField(required=False, max_length=255, default="HEAD")
    urlpath = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    labpath = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    filepath = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    team = serializers.SlugField(required=False, help_text="Launch for this team.")
    cpu = serializers.FloatField(
        required=False, allow_null=True, min_value=0.01, max_value=1024,
        help_text="CPU limit in cores, within your quota (default: the quota's limit).",
    )  # fmt: skip
    memory = serializers.IntegerField(
        required=False, allow_null=True, min_value=256 * 1024**2, max_value=2**50,
        help_text="Memory limit in bytes, within your quota (default: the quota's limit).",
    )  # fmt: skip

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("spec")) == bool(attrs.get("repo_url")):
            raise serializers.ValidationError("Give either spec or repo_url (with ref).")
        return attrs


class VolumeSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField()
    name = serializers.CharField(source="label", read_only=True)
    team: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    in_use = serializers.SerializerMethodField()
    size_kind = serializers.SerializerMethodField(
        help_text="What `size_bytes` is: `used`, the bytes the volume's files use; `capacity`, "
        "the size its storage allows (on Kubernetes: the claim's capacity, not the bytes used)."
    )
    archive_offered = serializers.SerializerMethodField(
        help_text="Whether `links.archive` gives a .tar.gz of the volume; when false it "
        "answers 501 `ARCHIVE_NOT_OFFERED` (download the files from a session instead)."
    )
    links = serializers.SerializerMethodField()

    class Meta:
        model = Volume
        fields = ["id", "kind", "name", "team", "size_bytes", "size_kind", "size_measured_at",
                  "created_at", "in_use", "archive_offered", "links"]  # fmt: skip
        read_only_fields = fields

    def get_kind(self, volume: Volume) -> str:
        return "home" if volume.user_id else "team"

    def get_in_use(self, volume: Volume) -> bool:
        from apps.sessions.selectors import volume_in_use

        annotated = getattr(volume, "in_use_now", None)  # volumes_for's, read with the rows
        return bool(annotated) if annotated is not None else volume_in_use(volume)

    @extend_schema_field(serializers.ChoiceField(choices=["used", "capacity"]))
    def get_size_kind(self, volume: Volume) -> str:
        return volume_offer().size_kind

    def get_archive_offered(self, volume: Volume) -> bool:
        return volume_offer().archive

    def get_links(self, volume: Volume) -> dict[str, str]:
        return {"archive": reverse("api-volume-archive", args=[volume.pk])}


class VolumeDeleteSerializer(serializers.Serializer):
    confirm = serializers.CharField(help_text="The volume's label, typed to confirm.")
