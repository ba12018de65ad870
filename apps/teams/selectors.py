"""Reads of teams that also authorize: a team you are not in does not exist for you."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import User
from apps.teams.models import Invitation, Membership, Team
from portal.errors import NotFound, PermissionDenied
from portal.utils import as_id


def teams_for_user(user: User) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user)


def memberships_for_user(user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("team").order_by("team__name")


def get_membership_for_user(user: User, slug: str) -> Membership:
    """The user's own membership of the team ``slug``; NotFound for anyone outside it."""
    if not user.is_authenticated:
        raise NotFound("No such team.")
    membership = (
        Membership.objects.select_related("team", "user").filter(team__slug=slug, user=user).first()
    )
    if membership is None:
        raise NotFound("No such team.")
    return membership


def members_of(team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user")


def get_member(actor: Membership, membership_id: int | str) -> Membership:
    membership = members_of(actor.team).filter(pk=as_id(membership_id)).first()
    if membership is None:
        raise NotFound("No such member.")
    return membership


def invitations_for(actor: Membership) -> QuerySet[Invitation]:
    if not actor.can_manage:
        raise PermissionDenied("Only team owners and admins can see invitations.")
    return Invitation.objects.filter(team=actor.team).select_related("created_by")


def get_invitation(actor: Membership, invitation_id: int | str) -> Invitation:
    invitation = invitations_for(actor).filter(pk=as_id(invitation_id)).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation
