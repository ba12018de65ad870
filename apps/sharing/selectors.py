"""Reads of team environments and share links that also authorize.

A team's environments exist only for its members; a share link for its sharer (to list
and revoke) and, through its secret, for the people it is shared with: a link for one team
is "no such link" to everyone outside that team.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import User
from apps.sharing import tokens
from apps.sharing.errors import ShareLinkExpired, ShareLinkNotFound, ShareLinkRevoked
from apps.sharing.models import ShareLink, TeamEnvironment
from apps.teams.models import Membership
from apps.teams.selectors import get_membership_for_user
from portal.errors import NotFound
from portal.utils import as_id


def environments_of(membership: Membership) -> QuerySet[TeamEnvironment]:
    """The environments of ``membership``'s team (any role reads them)."""
    return TeamEnvironment.objects.filter(team=membership.team).select_related("team", "created_by")


def environments_for_user(user: User) -> QuerySet[TeamEnvironment]:
    """The environments of every team ``user`` is in (the dashboard's list)."""
    return (
        TeamEnvironment.objects.filter(team__memberships__user=user)
        .select_related("team", "created_by")
        .order_by("team__name", "name", "id")
    )


def get_environment_for_user(
    user: User, slug: str, environment_id: int | str
) -> tuple[Membership, TeamEnvironment]:
    """The user's membership of team ``slug`` and one of its environments; NotFound for
    anyone outside the team and for another team's environment."""
    membership = get_membership_for_user(user, slug)
    environment = environments_of(membership).filter(pk=as_id(environment_id)).first()
    if environment is None:
        raise NotFound("No such environment.")
    return membership, environment


def share_links_for(user: User) -> QuerySet[ShareLink]:
    """The links ``user`` made, newest first."""
    return ShareLink.objects.filter(created_by=user).select_related("team")


def get_share_link_for_user(user: User, link_id: int | str) -> ShareLink:
    """One of the links ``user`` made; NotFound for anyone else's."""
    link = share_links_for(user).filter(pk=as_id(link_id)).first()
    if link is None:
        raise ShareLinkNotFound()
    return link


def get_share_link_by_token(user: User, token: str) -> ShareLink:
    """The link whose secret is ``token``, for ``user`` to see and launch.

    Raises ShareLinkNotFound (404) for an unknown or malformed secret, and for a team's link
    unless both ``user`` and the sharer are in that team (what the link is does not leak
    outside it, revoked or not); then ShareLinkRevoked or ShareLinkExpired (410)."""
    if not tokens.is_well_formed(token):
        raise ShareLinkNotFound()
    link = (
        ShareLink.objects.select_related("created_by", "team")
        .filter(digest=tokens.digest(token))
        .first()
    )
    if link is None:
        raise ShareLinkNotFound()
    if link.audience == ShareLink.Audience.TEAM:
        needed = {user.pk, link.created_by_id}
        members = Membership.objects.filter(team=link.team, user_id__in=needed).count()
        if members != len(needed):
            raise ShareLinkNotFound()
    if link.revoked_at is not None:
        raise ShareLinkRevoked()
    if link.expires_at is not None and link.expires_at <= timezone.now():
        raise ShareLinkExpired()
    return link
