"""Every change to team environments and share links, and their launches.

Whose credentials and whose quota, the rule of this app:

- A team environment is launched by a member of its team as a *team launch*
  (``launch(member, team=team)``): the member's own credentials, then the team's, and the
  team's quota. It stores no credential: saving one resolves it (to pin the commit) the
  same way, as a team launch of the admin who saves it.
- A share link is launched as a *personal launch of the launcher* (``team=None``): the
  launcher's own credentials and quota, never the sharer's. A link for one team is launched
  by a member of that team as a team launch of that team.

``launch()`` resolves the repository with the launcher's credentials before it looks for a
build, so an environment the sharer built from a private repository is reached only by
someone whose own credentials (or team's) can read it.

Resolution waits on git and HTTP and must not hold a transaction open (repos.services), so
the functions that resolve or launch do that first and write their rows in a transaction
afterwards; ``launch()`` keeps its own transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import User
from apps.builds.services import resolve_input
from apps.repos.parsing import parse_repo_input
from apps.repos.providers import get_provider
from apps.repos.services import check_spec_allowed
from apps.repos.validation import MAX_SPEC_LENGTH, check_text
from apps.sessions import services as sessions
from apps.sessions.models import Session
from apps.sharing import tokens
from apps.sharing.errors import ShareLinkExpired, ShareLinkRevoked
from apps.sharing.models import MIN_MEMORY_BYTES, ShareLink, TeamEnvironment
from apps.teams.models import Membership, Team
from apps.teams.services import require_manager
from portal.errors import PermissionDenied, invalid_field


@dataclass(frozen=True)
class IssuedShareLink:
    link: ShareLink
    token: str  # the secret part of the link; only its digest is stored

    @property
    def url(self) -> str:
        return f"{settings.SITE_URL}/s/{self.token}"


# --- inputs ---------------------------------------------------------------------------------


def repository_of(*, spec: str = "", repo_url: str = "", ref: str = "") -> tuple[str, str]:
    """(provider, spec) from a ``provider/spec`` or a pasted repository URL (or DOI) + ref,
    checked as a launch checks it before contacting anything: the spec's syntax and the
    ban/allow lists. Raises the repos input errors, SPEC_BANNED, SPEC_NOT_ALLOWED."""
    if bool(spec) == bool(repo_url):
        raise invalid_field("spec", "Give either spec or repo_url (with ref).")
    if spec:
        spec = check_text(spec, what="repository spec", max_length=MAX_SPEC_LENGTH).strip()
        provider, _, rest = spec.partition("/")
    else:
        provider, rest = parse_repo_input(repo_url, ref)
    parsed = get_provider(provider).parse(rest)
    check_spec_allowed(provider, rest, parsed.canonical)
    return provider, rest


def _check_resources(team: Team, cpu: float | None, memory_bytes: int | None) -> None:
    """Within what one of the team's sessions may have (the team's pool and ceilings): an
    environment nobody could launch is refused when saved, not at every launch."""
    from apps.quotas.services import team_quota

    if cpu is not None and not (cpu > 0 and cpu <= 1024):
        raise invalid_field("cpu", "CPU must be more than 0 and at most 1024 cores.")
    if memory_bytes is not None and not MIN_MEMORY_BYTES <= memory_bytes <= 2**50:
        raise invalid_field("memory_bytes", "Memory must be at least 256 MiB (268435456 bytes).")
    limits = team_quota(team)
    for field, name, asked in (("cpu", "cpu", cpu), ("memory_bytes", "memory", memory_bytes)):
        allowed = limits.get(name)
        if asked is not None and allowed is not None and asked > allowed:
            raise invalid_field(field, f"The team's sessions may have at most {allowed:g} "
                           f"{'cores' if name == 'cpu' else 'bytes'} of {name}.")  # fmt: skip


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise invalid_field("name", "Give the environment a name.")
    if len(name) > 100:
        raise invalid_field("name", "The name can be at most 100 characters.")
    return name


def _require_manager(actor: Membership) -> None:
    require_manager(actor, "change the team's environments")


# --- team environments ----------------------------------------------------------------------


_REPOSITORY_FIELDS = ("spec", "repo_url", "ref", "follow_branch")


def _pin(actor: Membership, provider: str, spec: str) -> tuple[str, str]:
    """(resolved ref, persistent spec) of the repository as a team launch by ``actor`` sees
    it now. Raises the resolution errors (REPO_NOT_FOUND_OR_PRIVATE, REF_NOT_FOUND...)."""
    resolved, _ = resolve_input(actor.user, spec=f"{provider}/{spec}", team=actor.team)
    return resolved.resolved_ref, resolved.persistent_spec


def create_team_environment(
    actor: Membership,
    *,
    name: str,
    spec: str = "",
    repo_url: str = "",
    ref: str = "",
    follow_branch: bool = True,
    urlpath: str = "",
    cpu: float | None = None,
    memory_bytes: int | None = None,
) -> TeamEnvironment:
    """Add an environment to ``actor``'s team (owners and admins). It is resolved now, as a
    team launch by ``actor`` would resolve it: a repository nobody in the team can read, or
    a ref that does not exist, is refused here rather than at every member's launch; without
    ``follow_branch`` the commit found is the one every launch gets.

    Raises PermissionDenied (members), InvalidInput (VALIDATION_ERROR, URLPATH_INVALID), the
    repos input and resolution errors."""
    _require_manager(actor)
    name = _check_name(name)
    _check_resources(actor.team, cpu, memory_bytes)
    urlpath = sessions.clean_urlpath(urlpath)
    provider, spec = repository_of(spec=spec, repo_url=repo_url, ref=ref)
    resolved_ref, pinned = _pin(actor, provider, spec)
    with transaction.atomic():
        return TeamEnvironment.objects.create(
            team=actor.team, name=name, provider=provider, spec=spec,
            follow_branch=follow_branch, resolved_ref=resolved_ref, pinned_spec=pinned,
            urlpath=urlpath, cpu=cpu, memory_bytes=memory_bytes, created_by=actor.user,
        )  # fmt: skip


def update_team_environment(
    actor: Membership, environment: TeamEnvironment, changes: dict[str, Any]
) -> TeamEnvironment:
    """Change some of an environment's fields (those in ``changes``: name, spec or repo_url
    + ref, follow_branch, urlpath, cpu, memory_bytes; a None cpu or memory is the quota's
    limit). Any change to the repository or to ``follow_branch`` resolves it again (so
    ``{"follow_branch": false}`` pins it to the branch's commit of now).

    Raises what ``create_team_environment`` raises."""
    _require_manager(actor)
    fields: dict[str, Any] = {}
    if "name" in changes:
        fields["name"] = _check_name(changes["name"])
    cpu = changes.get("cpu", environment.cpu)
    memory_bytes = changes.get("memory_bytes", environment.memory_bytes)
    _check_resources(actor.team, cpu, memory_bytes)
    fields.update(cpu=cpu, memory_bytes=memory_bytes)
    if "urlpath" in changes:
        fields["urlpath"] = sessions.clean_urlpath(changes["urlpath"] or "")
    if any(key in changes for key in _REPOSITORY_FIELDS):
        if changes.get("spec") or changes.get("repo_url"):
            provider, spec = repository_of(spec=changes.get("spec", ""),
                                           repo_url=changes.get("repo_url", ""),
                                           ref=changes.get("ref", ""))  # fmt: skip
        elif changes.get("ref"):
            raise invalid_field(
                "repo_url", "Give repo_url with ref (or a spec with the ref in it)."
            )
        else:
            provider, spec = environment.provider, environment.spec
        resolved_ref, pinned = _pin(actor, provider, spec)
        fields.update(provider=provider, spec=spec, resolved_ref=resolved_ref, pinned_spec=pinned)
        if "follow_branch" in changes:
            fields["follow_branch"] = bool(changes["follow_branch"])
    with transaction.atomic():
        row = TeamEnvironment.objects.select_for_update().get(pk=environment.pk)
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = timezone.now()
        row.save(update_fields=[*fields, "updated_at"])
    return row


@transaction.atomic
def delete_team_environment(actor: Membership, environment: TeamEnvironment) -> None:
    """Remove an environment from the team (owners and admins); sessions launched from it
    go on. Raises PermissionDenied."""
    _require_manager(actor)
    TeamEnvironment.objects.filter(pk=environment.pk, team=actor.team).delete()


def launch_team_environment(actor: Membership, environment: TeamEnvironment) -> Session:
    """Launch the environment as a team launch of ``actor`` (any member): the member's and
    the team's credentials, the team's quota, the environment's CPU and memory (None: the
    quota's limit). Returns the session, building or launching.

    Raises the resolution errors and the quota's refusals (QUOTA_EXCEEDED...)."""
    return sessions.launch(
        actor.user,
        spec=environment.launch_spec,
        urlpath=environment.urlpath,
        team=actor.team,
        cpu=environment.cpu,
        memory_bytes=environment.memory_bytes,
    )


# --- share links ----------------------------------------------------------------------------


def create_share_link(
    user: User,
    *,
    name: str = "",
    spec: str = "",
    repo_url: str = "",
    ref: str = "",
    urlpath: str = "",
    audience: str = ShareLink.Audience.SIGNED_IN,
    team: Team | None = None,
    expires_at: datetime | None = None,
) -> IssuedShareLink:
    """A link to an environment, for anyone signed in or for the members of ``team`` (the
    sharer must be one: the caller gets the team through ``get_membership_for_user``).
    Nothing is resolved or stored but the spec: each launcher resolves it with their own
    credentials. The secret is in the returned value only.

    Raises InvalidInput (VALIDATION_ERROR, URLPATH_INVALID), the repos input errors."""
    name = name.strip()[:100]
    if audience not in ShareLink.Audience.values:
        raise invalid_field("audience", "The audience is signed_in or team.")
    if audience == ShareLink.Audience.TEAM and team is None:
        raise invalid_field("team", "Name the team whose members may launch it.")
    if audience == ShareLink.Audience.SIGNED_IN:
        team = None
    if team is not None and not Membership.objects.filter(team=team, user=user).exists():
        raise PermissionDenied("You can share with a team you are in only.")
    if expires_at is not None and expires_at <= timezone.now():
        raise invalid_field("expires_at", "The expiry must be in the future.")
    urlpath = sessions.clean_urlpath(urlpath)
    provider, spec = repository_of(spec=spec, repo_url=repo_url, ref=ref)
    token = tokens.generate()
    with transaction.atomic():
        link = ShareLink.objects.create(
            created_by=user, name=name, provider=provider, spec=spec, urlpath=urlpath,
            audience=audience, team=team, digest=tokens.digest(token), expires_at=expires_at,
        )  # fmt: skip
    return IssuedShareLink(link=link, token=token)


@transaction.atomic
def revoke_share_link(user: User, link: ShareLink) -> ShareLink:
    """Stop a link working (its sharer only: the caller's selector checked). The row stays,
    so the link answers 410 SHARE_LINK_REVOKED. Safe to run twice."""
    row = ShareLink.objects.select_for_update().get(pk=link.pk, created_by=user)
    if row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
    return row


def launch_share_link(user: User, link: ShareLink) -> Session:
    """Launch what ``link`` shares (the caller found it with
    ``selectors.get_share_link_by_token``, which checked who may): a personal launch of
    ``user``, or for a team link a team launch of that team. Never with the sharer's
    credentials or quota. Counts the use once the session exists.

    Raises ShareLinkRevoked/Expired (checked again here: it may have changed since the
    page was drawn), the resolution errors, the quota's refusals."""
    _check_usable(link)
    session = sessions.launch(
        user,
        spec=link.full_spec,
        urlpath=link.urlpath,
        team=link.team if link.audience == ShareLink.Audience.TEAM else None,
    )
    with transaction.atomic():
        ShareLink.objects.filter(pk=link.pk).update(uses=F("uses") + 1, last_used_at=timezone.now())
    return session


def _check_usable(link: ShareLink) -> None:
    link.refresh_from_db(fields=["revoked_at", "expires_at"])
    if link.revoked_at is not None:
        raise ShareLinkRevoked()
    if link.expires_at is not None and link.expires_at <= timezone.now():
        raise ShareLinkExpired()
