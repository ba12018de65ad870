"""Reads of workshops that also authorize: someone else's workshop is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from apps.teams.models import ROLE_RANK, Role
from apps.workshops.models import Seat, Workshop
from apps.workshops.services import guest_digest
from portal.errors import NotFound
from portal.utils import as_id

_MANAGING = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role.ADMIN]]


def workshops_for(user: Any) -> QuerySet[Workshop]:
    """The workshops a user runs: their own, and their teams' when they manage the team."""
    if not getattr(user, "is_authenticated", False):
        return Workshop.objects.none()
    return (
        Workshop.objects.filter(
            Q(owner=user) | Q(team__memberships__user=user, team__memberships__role__in=_MANAGING)
        )
        .distinct()
        .select_related("build", "team", "owner")
    )


def get_workshop_for_instructor(user: Any, workshop_id: int | str) -> Workshop:
    workshop = workshops_for(user).filter(pk=as_id(workshop_id)).first()
    if workshop is None:
        raise NotFound("No such workshop.")
    return workshop


def roster(workshop: Workshop) -> QuerySet[Seat]:
    return workshop.seat_set.select_related("session", "user").order_by("joined_at", "id")


def environment_keys_reserved() -> set[str]:
    """Environments of workshops not yet closed: never pruned before the workshop ends."""
    keys = Workshop.objects.filter(closed_at__isnull=True).values_list(
        "build__environment_key", flat=True
    )
    return {key for key in keys if key}


def seat_for_visitor(workshop: Workshop, user: Any, guest_owner: str = "") -> Seat | None:
    """The seat the visitor already holds: a signed-in user's own, or the one their
    browser's guest secret (``guest_owner``) took; None when they hold none."""
    seats = workshop.seat_set.select_related("session")
    if getattr(user, "is_authenticated", False):
        return seats.filter(user=user).first()
    if guest_owner:
        return seats.filter(user__isnull=True, guest_digest=guest_digest(guest_owner)).first()
    return None


def seat_of_session(session_id: int) -> Seat | None:
    """The workshop seat a session serves (for its launch page's banner), or None."""
    return Seat.objects.select_related("workshop", "session").filter(session_id=session_id).first()
