"""Reads of workshops that also authorize: someone else's workshop is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from apps.teams.models import ROLE_RANK, Role
from apps.workshops.models import Seat, Workshop
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
