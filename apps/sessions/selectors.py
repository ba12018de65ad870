"""Reads of sessions and volumes that also authorize: another person's is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from apps.sessions.models import Session, Volume
from apps.teams.models import ROLE_RANK, Membership, Role
from portal.errors import NotFound, PermissionDenied
from portal.utils import as_id


def sessions_for(user: Any, anonymous_owner: str = "") -> QuerySet[Session]:
    if getattr(user, "is_authenticated", False):
        return Session.objects.filter(user=user)
    if anonymous_owner:
        return Session.objects.filter(user=None, anonymous_owner=anonymous_owner)
    return Session.objects.none()


# The columns a row of the API's session lists shows (SessionSerializer; a team's list adds
# whose it is). Reading only these takes a third off reading a 100-row page: the build's
# resolution and receipt (JSON documents, the receipt listing every package) stay unread. A
# column missing here costs a query per row (tests/test_list_queries.py counts them).
_LISTED = ["id", "status", "provider", "spec", "urlpath", "url", "build", "team", "user",
           "hub_user", "error_code", "error_message", "memory_bytes", "cpu", "created_at",
           "ready_at", "stopped_at", "last_activity", "keepalive_at", "build__phase",
           "team__slug"]  # fmt: skip
_LISTED_USER = ["user__id", "user__username", "user__email", "user__first_name",
                "user__last_name"]  # fmt: skip


def listed(sessions: QuerySet[Session], *, with_user: bool = False) -> QuerySet[Session]:
    """``sessions`` with what the API's lists show and nothing more: the build's phase, the
    team's slug and (``with_user``, a team's list) who launched each."""
    if with_user:
        return sessions.select_related("build", "team", "user").only(*_LISTED, *_LISTED_USER)
    return sessions.select_related("build", "team").only(*_LISTED)


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


# Roles that may see and stop the team's sessions (Membership.can_manage, as a query).
_MANAGING_ROLES = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role.ADMIN]]


def team_sessions_for(actor: Membership, active_only: bool = True) -> QuerySet[Session]:
    """The sessions launched for the actor's team, whoever launched them (a former member's
    too: it still mounts the team's volume), with user, build and team joined. Never a
    member's personal sessions. Raises PermissionDenied unless the actor is an owner or
    admin: members see their own sessions on their dashboard, not the team's."""
    if not actor.can_manage:
        raise PermissionDenied("Only team owners and admins can see the team's sessions.")
    sessions = Session.objects.filter(team=actor.team).select_related("build", "team", "user")
    if active_only:
        sessions = sessions.filter(status__in=Session.ACTIVE)
    return sessions


def get_team_session(actor: Membership, session_id: int | str) -> Session:
    """One session of the actor's team (see team_sessions_for); NotFound for any other."""
    session = team_sessions_for(actor, active_only=False).filter(pk=as_id(session_id)).first()
    if session is None:
        raise NotFound("No such session.")
    return session


def get_session_for_stop(user: Any, session_id: int | str) -> Session:
    """A session the user may stop: their own, or one launched for a team they own or
    administer. Anything else (another person's, a team member's personal session) is
    NotFound, as if it did not exist."""
    if not getattr(user, "is_authenticated", False):
        raise NotFound("No such session.")
    managed = Membership.objects.filter(user=user, role__in=_MANAGING_ROLES).values("team")
    session = (
        Session.objects.filter(Q(user=user) | Q(team__in=managed))
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
    # In use (as volume_in_use says) for every row in the one query: a home volume (team_id
    # NULL, which equals nothing) by its owner's active sessions, a team's by the team's.
    active = Session.objects.filter(status__in=Session.ACTIVE).filter(
        Q(user_id=OuterRef("user_id")) | Q(team_id=OuterRef("team_id"))
    )
    return (
        Volume.objects.filter(Q(user=user) | Q(team__memberships__user=user))
        .select_related("team")
        .annotate(in_use_now=Exists(active))
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
