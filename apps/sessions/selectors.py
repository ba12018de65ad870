"""Reads of sessions and volumes that also authorize: another person's is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from apps.sessions.models import Session, Volume
from portal.errors import NotFound
from portal.utils import as_id


def sessions_for(user: Any, anonymous_owner: str = "") -> QuerySet[Session]:
    if getattr(user, "is_authenticated", False):
        return Session.objects.filter(user=user)
    if anonymous_owner:
        return Session.objects.filter(user=None, anonymous_owner=anonymous_owner)
    return Session.objects.none()


def get_session_for_user(user: Any, session_id: int | str, anonymous_owner: str = "") -> Session:
    session = (
        sessions_for(user, anonymous_owner)
        .select_related("build", "team")
        .filter(pk=as_id(session_id))
        .first()
    )
    if session is None:
        raise NotFound("No such session.")
    return session


def environment_keys_in_use() -> set[str]:
    keys = Session.objects.filter(status__in=Session.ACTIVE).values_list(
        "environment_key", "build__environment_key"
    )
    return {key for pair in keys for key in pair if key}


def volumes_for(user: Any) -> QuerySet[Volume]:
    """The user's home volume and the volumes of their teams (see services.ensure_volumes)."""
    if not getattr(user, "is_authenticated", False):
        return Volume.objects.none()
    return Volume.objects.filter(Q(user=user) | Q(team__memberships__user=user)).select_related(
        "team"
    )


def get_volume_for_user(user: Any, volume_id: int | str) -> Volume:
    volume = volumes_for(user).filter(pk=as_id(volume_id)).first()
    if volume is None:
        raise NotFound("No such volume.")
    return volume


def volume_in_use(volume: Volume) -> bool:
    running = Session.objects.filter(status__in=Session.ACTIVE)
    if volume.user_id:
        return running.filter(user_id=volume.user_id).exists()
    return running.filter(team=volume.team).exists()
