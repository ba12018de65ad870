"""Reads of credentials that also authorize: a credential you may not use does not exist
for you (NotFound, never 403)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from apps.accounts.models import User
from apps.repos.models import Credential
from apps.teams.models import Membership
from portal.errors import NotFound
from portal.utils import as_id


def _signed_in(user: User | AnonymousUser | None) -> bool:
    return user is not None and bool(user.is_authenticated)


def credentials_for_user(user: User | AnonymousUser | None) -> QuerySet[Credential]:
    """The credentials ``user`` may use: their own and those of every team they are in."""
    if not _signed_in(user):
        return Credential.objects.none()
    assert isinstance(user, User)
    return Credential.objects.filter(Q(user=user) | Q(team__memberships__user=user)).select_related(
        "team", "created_by"
    )


def get_credential_for_user(user: User | AnonymousUser | None, credential_id: object) -> Credential:
    """One credential ``user`` may use; NotFound otherwise."""
    credential = credentials_for_user(user).filter(pk=as_id(credential_id)).first()
    if credential is None:
        raise NotFound("No such credential.")
    return credential


def can_use_credential(user: User | AnonymousUser | None, credential: Credential | int) -> bool:
    """Whether ``user`` may use ``credential`` (a Credential or its id): it is theirs, or it
    belongs to a team they are a member of (any role)."""
    if not _signed_in(user):
        return False
    assert isinstance(user, User)
    if isinstance(credential, int):
        return credentials_for_user(user).filter(pk=credential).exists()
    if credential.user_id is not None:
        return credential.user_id == user.pk
    if credential.team_id is None:
        return False
    return Membership.objects.filter(team_id=credential.team_id, user=user).exists()


def team_roles(user: User) -> dict[int, str]:
    """``{team id: role}`` for every team ``user`` is in."""
    return dict(Membership.objects.filter(user=user).values_list("team_id", "role"))


def usable_credentials(user: User | AnonymousUser | None) -> QuerySet[Credential]:
    """Alias of ``credentials_for_user`` (the credentials ``user`` may use), e.g. for
    ``Build.objects.filter(credential__in=usable_credentials(user))``."""
    return credentials_for_user(user)
