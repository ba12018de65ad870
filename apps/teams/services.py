"""Every change to teams, memberships and invitations.

Role rules: admins and owners manage the team (invite, rename, revoke invitations, change
member and admin roles, remove members and admins); only owners grant or take away the owner
role, remove owners or delete the team. A team always keeps at least one owner.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts import tokens
from apps.accounts.models import User
from apps.teams.models import ROLE_RANK, Invitation, Membership, Role, Team
from portal.errors import BinderyError, Conflict, InvalidInput, PermissionDenied

INVITATION_DAYS = 7
RESERVED_SLUGS = {"new", "join", "invitations"}


class LastOwner(Conflict):
    code = "LAST_OWNER"
    default_message = "A team needs at least one owner: make someone else owner first."


class InvitationInvalid(BinderyError):
    status = 404
    code = "INVITATION_INVALID"
    default_message = "This invitation does not exist, has expired or has been used."


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # the secret part of the invite URL; only its digest is stored

    @property
    def url(self) -> str:
        return f"{settings.SITE_URL}/teams/join/{self.token}/"


def _lock(team: Team) -> Team:
    return Team.objects.select_for_update().get(pk=team.pk)


def require_manager(actor: Membership, what: str = "do this", *, staff: bool = False) -> None:
    """Raise PermissionDenied unless ``actor`` is an owner or admin of their team (or, with
    ``staff``, a staff member): "Only team owners and admins can <what>."."""
    if not actor.can_manage and not (staff and actor.user.is_staff):
        raise PermissionDenied(f"Only team owners and admins can {what}.")


def _owners(team: Team) -> int:
    return Membership.objects.filter(team=team, role=Role.OWNER).count()


def _unique_slug(base: str) -> str:
    base = (slugify(base) or "team")[:40].strip("-") or "team"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def create_team(user: User, name: str, slug: str = "") -> Team:
    """Create a team with ``user`` as its owner. Raises Conflict if ``slug`` is taken."""
    name = name.strip()
    if not name:
        raise InvalidInput("Give the team a name.", code="TEAM_NAME_REQUIRED")
    if slug:
        if slug in RESERVED_SLUGS:
            raise Conflict(f"The address {slug!r} is reserved.", code="TEAM_SLUG_TAKEN")
        if Team.objects.filter(slug=slug).exists():
            raise Conflict(f"The address {slug!r} is taken.", code="TEAM_SLUG_TAKEN")
    try:
        with transaction.atomic():
            team = Team.objects.create(
                name=name[:100], slug=slug or _unique_slug(name), created_by=user
            )
    except IntegrityError:
        raise Conflict("That team address was just taken.", code="TEAM_SLUG_TAKEN") from None
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    return team


@transaction.atomic
def update_team(actor: Membership, name: str) -> Team:
    require_manager(actor)
    team = actor.team
    name = name.strip()
    if not name:
        raise InvalidInput("Give the team a name.", code="TEAM_NAME_REQUIRED")
    team.name = name[:100]
    team.save(update_fields=["name"])
    return team


@transaction.atomic
def delete_team(actor: Membership) -> None:
    if actor.role != Role.OWNER:
        raise PermissionDenied("Only a team owner can delete the team.")
    actor.team.delete()


@transaction.atomic
def change_role(actor: Membership, target: Membership, role: str) -> Membership:
    """Set ``target``'s role. Raises PermissionDenied or LastOwner."""
    require_manager(actor)
    if role not in Role.values:
        raise InvalidInput(f"Unknown role {role!r}.", code="ROLE_INVALID")
    touches_owner = Role.OWNER in (role, target.role)
    if touches_owner and actor.role != Role.OWNER:
        raise PermissionDenied("Only owners can grant or take away the owner role.")
    _lock(target.team)
    target.refresh_from_db()
    if target.role == role:
        return target
    if target.role == Role.OWNER and _owners(target.team) == 1:
        raise LastOwner()
    target.role = role
    target.save(update_fields=["role"])
    return target


@transaction.atomic
def remove_member(actor: Membership, target: Membership) -> None:
    """Remove ``target`` from the team (``actor`` removing themself is leaving)."""
    if actor.pk == target.pk:
        leave_team(actor)
        return
    require_manager(actor)
    if ROLE_RANK[Role(target.role)] > actor.rank:
        raise PermissionDenied("Only owners can remove an owner.")
    _lock(target.team)
    if target.role == Role.OWNER and _owners(target.team) == 1:
        raise LastOwner()
    target.delete()
    _stop_team_sessions(target, "Stopped: its owner was removed from the team.")


@transaction.atomic
def leave_team(membership: Membership) -> None:
    _lock(membership.team)
    if membership.role == Role.OWNER and _owners(membership.team) == 1:
        raise LastOwner("You are the last owner: make someone else owner before you leave.")
    membership.delete()
    _stop_team_sessions(membership, "Stopped: its owner left the team.")


def _stop_team_sessions(membership: Membership, reason: str) -> None:
    """Someone out of a team keeps no session that mounts the team's volume or spends its
    quota: their team sessions are asked to stop (personal ones are untouched)."""
    from apps.sessions.models import Session
    from apps.sessions.services import request_stop

    for session in Session.objects.filter(user=membership.user, team=membership.team,
                                          status__in=Session.ACTIVE).exclude(
                                              status=Session.Status.STOPPING):  # fmt: skip
        request_stop(session, reason)


def _check_invitable_role(actor: Membership, role: str) -> None:
    require_manager(actor)
    if role not in Role.values:
        raise InvalidInput(f"Unknown role {role!r}.", code="ROLE_INVALID")
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise PermissionDenied("Only owners can invite owners.")


def _issue(actor: Membership, **fields: object) -> IssuedInvitation:
    secret = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        team=actor.team,
        digest=tokens.digest(secret),
        created_by=actor.user,
        **fields,
    )
    return IssuedInvitation(invitation=invitation, token=secret)


@transaction.atomic
def invite_by_email(actor: Membership, email: str, role: str = Role.MEMBER) -> IssuedInvitation:
    """Invite an address; the email goes out after commit. Raises Conflict for a member."""
    _check_invitable_role(actor, role)
    email = email.strip().lower()
    if Membership.objects.filter(team=actor.team, user__email__iexact=email).exists():
        raise Conflict(f"{email} is already a member.", code="ALREADY_MEMBER")
    issued = _issue(
        actor,
        kind=Invitation.Kind.EMAIL,
        email=email,
        role=role,
        max_uses=1,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    team_name, inviter, url = actor.team.name, actor.user.label, issued.url
    transaction.on_commit(
        lambda: send_mail(
            f"Join {team_name} on Bindery",
            f"{inviter} invited you to join the team {team_name} on Bindery.\n\n"
            f"Accept the invitation: {url}\n\nIt expires in {INVITATION_DAYS} days.",
            None,
            [email],
        )
    )
    return issued


@transaction.atomic
def create_invite_link(
    actor: Membership,
    role: str = Role.MEMBER,
    days: int = INVITATION_DAYS,
    max_uses: int | None = None,
) -> IssuedInvitation:
    _check_invitable_role(actor, role)
    if not 1 <= days <= 90:
        raise InvalidInput("An invite link lasts between 1 and 90 days.", code="INVITATION_DAYS")
    return _issue(
        actor,
        kind=Invitation.Kind.LINK,
        role=role,
        max_uses=max_uses,
        expires_at=timezone.now() + timedelta(days=days),
    )


@transaction.atomic
def revoke_invitation(actor: Membership, invitation: Invitation) -> Invitation:
    require_manager(actor)
    if invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
    return invitation


def find_invitation(token: str) -> Invitation:
    """The usable invitation for a secret, or InvitationInvalid."""
    invitation = (
        Invitation.objects.select_related("team").filter(digest=tokens.digest(token)).first()
    )
    if invitation is None or invitation.status != "pending":
        raise InvitationInvalid()
    return invitation


@transaction.atomic
def accept_invitation(user: User, token: str) -> Membership:
    """Join the team of the invitation. Idempotent for someone already in the team."""
    invitation = find_invitation(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != "pending":
        raise InvitationInvalid()
    existing = Membership.objects.filter(team=invitation.team, user=user).first()
    if existing is not None:
        return existing
    if invitation.kind == Invitation.Kind.EMAIL and not _has_email(user, invitation.email):
        raise PermissionDenied(
            f"This invitation was sent to {invitation.email}; sign in with that address.",
            code="INVITATION_EMAIL_MISMATCH",
        )
    membership = Membership.objects.create(team=invitation.team, user=user, role=invitation.role)
    invitation.uses += 1
    invitation.save(update_fields=["uses"])
    return membership


def _has_email(user: User, email: str) -> bool:
    from allauth.account.models import EmailAddress

    if user.email.lower() == email.lower():
        return True
    return EmailAddress.objects.filter(user=user, email__iexact=email, verified=True).exists()
