"""Resolving repositories and every change to stored credentials.

Public surface for other apps:

- ``resolve(provider, spec, user, *, team=None) -> ResolvedRepo``
- ``resolve_url(url, ref, user, *, team=None) -> ResolvedRepo``
- ``parse_repo_input(text, ref="") -> (provider, spec)``
- ``credentials_for(user, host, team=None) -> tuple[GitCredential, ...]``
- ``load_git_credential(credential_id) -> GitCredential`` (workers, for a resolved private repo)

Resolution is not wrapped in a transaction: it waits on git and HTTP, and must not hold a
database transaction open meanwhile. It is safe to call twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.repos import crypto
from apps.repos.errors import (
    CredentialGone,
    CredentialInvalid,
    CredentialLimitReached,
    CredentialUnreadable,
    SpecBanned,
    SpecInvalid,
    SpecNotAllowed,
)
from apps.repos.models import Credential
from apps.repos.parsing import parse_repo_input
from apps.repos.providers import get_provider
from apps.repos.types import GitCredential, ResolvedRepo
from apps.repos.validation import MAX_SPEC_LENGTH, check_text, normalise_hostport
from apps.teams.models import Membership, Team
from portal.errors import NotFound, PermissionDenied

logger = logging.getLogger(__name__)

MAX_CREDENTIALS_PER_OWNER = 50
MAX_TOKEN_LENGTH = 4096
DEFAULT_GIT_USERNAME = "x-access-token"

__all__ = [
    "check_spec_allowed",
    "create_credential",
    "credential_used",
    "credentials_for",
    "delete_credential",
    "load_git_credential",
    "mark_credential_used",
    "parse_repo_input",
    "resolve",
    "resolve_url",
    "rotate_encryption_keys",
]


# --- Resolution ---------------------------------------------------------------------------


def check_spec_allowed(provider: str, spec: str, canonical: str = "") -> None:
    """Apply settings.BINDERY_BANNED_SPECS / BINDERY_ALLOWED_SPECS (provider → regexes,
    matched from the start, ignoring case, as BinderHub does).

    A spec is banned when the spec as given *or* its canonical form matches a ban, and
    allowed (when the provider has an allow list) only when its canonical form (or, without
    one, the spec) matches: another escaping of the same repository cannot slip through.
    Raises SpecBanned or SpecNotAllowed.
    """
    forms = [f for f in (spec, canonical) if f]
    for pattern in settings.BINDERY_BANNED_SPECS.get(provider, []):
        if any(re.match(pattern, form, re.IGNORECASE) for form in forms):
            raise SpecBanned()
    allowed = settings.BINDERY_ALLOWED_SPECS.get(provider, [])
    checked = canonical or spec
    if allowed and not any(re.match(pattern, checked, re.IGNORECASE) for pattern in allowed):
        raise SpecNotAllowed()


def resolve(
    provider: str, spec: str, user: User | AnonymousUser | None, *, team: Team | None = None
) -> ResolvedRepo:
    """Resolve ``provider``/``spec`` to an immutable version (a commit, a record version).

    Order: the spec's syntax and every value in it are checked, then ban/allow patterns,
    then the host rules, and only then is anything contacted. A private git repository is
    read with the first of ``credentials_for(user, host, team)`` that works (after an
    anonymous attempt); its id is returned as ``credential_id`` and marked used.

    Raises ProviderUnknown, the input errors (SPEC_INVALID, REF_INVALID, URL_*...),
    SpecBanned/SpecNotAllowed, HostForbidden, RepoNotFoundOrPrivate, RefNotFound,
    RecordNotFound, ProviderUnavailable.
    """
    implementation = get_provider(provider)
    spec = check_text(spec, what="repository spec", max_length=MAX_SPEC_LENGTH)
    if not spec:
        raise SpecInvalid("Give a repository.")
    parsed = implementation.parse(spec)
    check_spec_allowed(provider, spec, parsed.canonical)
    stored: list[tuple[int, GitCredential]] = []
    if implementation.uses_credentials:
        stored = _usable_credentials(user, implementation.credential_host(parsed), team)
    resolution = implementation.resolve(parsed, [git for _, git in stored])
    credential_id = None
    if resolution.credential is not None:
        credential_id = next(pk for pk, git in stored if git is resolution.credential)
        mark_credential_used(credential_id)
    return replace(resolution.repo, credential_id=credential_id)


def resolve_url(
    url: str, ref: str, user: User | AnonymousUser | None, *, team: Team | None = None
) -> ResolvedRepo:
    """A pasted repository URL (or DOI) and ref: ``parse_repo_input`` then ``resolve``,
    so the result is the same as through the matching provider."""
    provider, spec = parse_repo_input(url, ref)
    return resolve(provider, spec, user, team=team)


# --- Credentials --------------------------------------------------------------------------


def _credential_rows(
    user: User | AnonymousUser | None, host: str, team: Team | None
) -> list[Credential]:
    # A team's credential is lent for that team's launches only: a member launching for
    # themselves (or for another team) must not read the team's private repositories with
    # it — nor, through postBuild, hand its token to code the team never chose.
    if user is None or not user.is_authenticated or not host:
        return []
    own = list(Credential.objects.filter(user=user, host=host.lower()).order_by("created_at", "id"))
    if team is None:
        return own
    shared = list(
        Credential.objects.filter(host=host.lower(), team=team, team__memberships__user=user)
        .select_related("team")
        .order_by("created_at", "id")
    )
    return own + shared


def _git_credential(credential: Credential) -> GitCredential:
    return GitCredential(
        host=credential.host,
        token=crypto.decrypt(credential.encrypted_token),
        username=credential.username or DEFAULT_GIT_USERNAME,
    )


def _usable_credentials(
    user: User | AnonymousUser | None, host: str, team: Team | None
) -> list[tuple[int, GitCredential]]:
    usable = []
    for credential in _credential_rows(user, host, team):
        try:
            usable.append((credential.pk, _git_credential(credential)))
        except CredentialUnreadable:
            logger.warning(
                "credential %s cannot be decrypted with the configured keys", credential.pk
            )
    return usable


def credentials_for(
    user: User | AnonymousUser | None, host: str, team: Team | None = None
) -> tuple[GitCredential, ...]:
    """The credentials a launch or build by ``user`` for ``team`` (None: for themselves) may
    use for ``host`` (``host[:port]``), in the order to try them: the user's own, then —
    only when ``team`` is given and the user is in it — that team's. Other teams' never.
    Unreadable ones are skipped."""
    return tuple(git for _, git in _usable_credentials(user, host, team))


def credential_used(
    resolved: ResolvedRepo, user: User | AnonymousUser | None, *, team: Team | None = None
) -> Credential | None:
    """The stored credential a resolution needed (None for a public repository), when a
    launch by ``user`` for ``team`` may use it: the user's own, or ``team``'s."""
    if resolved.credential_id is None:
        return None
    from apps.repos.selectors import credentials_for_user

    credential = credentials_for_user(user).filter(pk=resolved.credential_id).first()
    if credential is None or credential.team_id is None:
        return credential  # the user's own (credentials_for_user checked whose)
    return credential if team is not None and credential.team_id == team.pk else None


def load_git_credential(credential_id: int) -> GitCredential:
    """The decrypted credential a resolution used (``ResolvedRepo.credential_id``), for the
    worker that fetches the repository. No authorization here: callers check
    ``selectors.can_use_credential`` when a person asks. Raises CredentialGone."""
    credential = Credential.objects.filter(pk=credential_id).first()
    if credential is None:
        raise CredentialGone()
    return _git_credential(credential)


def _clean(value: str, what: str, max_length: int) -> str:
    try:
        check_text(value, what=what, max_length=max_length)
    except Exception:
        # The value may be a secret: the message names the field, never the value.
        raise CredentialInvalid(
            f"The {what} is too long or contains a control character."
        ) from None
    return value.strip()


@transaction.atomic
def create_credential(
    user: User,
    *,
    host: str,
    token: str,
    username: str = "",
    label: str = "",
    team: Team | None = None,
) -> Credential:
    """Store an encrypted credential for ``host``: the user's own, or (``team``) the team's,
    which only its owners and admins may add. Raises CredentialInvalid, NotFound (a team the
    user is not in), PermissionDenied, CredentialLimitReached."""
    token = _clean(token, "token", MAX_TOKEN_LENGTH)
    if not token or any(c.isspace() for c in token):
        raise CredentialInvalid("Give the token (it cannot contain spaces).")
    username = _clean(username, "user name", 255)
    if ":" in username or any(c.isspace() for c in username):
        raise CredentialInvalid("A git user name cannot contain ':' or spaces.")
    label = _clean(label, "label", 100)
    try:
        hostport = normalise_hostport(host)
    except Exception as exc:
        code = getattr(exc, "code", "CREDENTIAL_INVALID")
        raise CredentialInvalid(
            "Give the host as a name such as github.com or git.example.org:8443, without a "
            "user name or password.",
            code="CREDENTIAL_HOST_INVALID" if code != "URL_CREDENTIALS_FORBIDDEN" else code,
        ) from None
    if team is not None:
        membership = Membership.objects.filter(team=team, user=user).first()
        if membership is None:
            raise NotFound("No such team.")
        if not membership.can_manage:
            raise PermissionDenied("Only team owners and admins can add team credentials.")
        Team.objects.select_for_update().filter(pk=team.pk).first()
        count = Credential.objects.filter(team=team).count()
    else:
        count = Credential.objects.filter(user=user).count()
    if count >= MAX_CREDENTIALS_PER_OWNER:
        raise CredentialLimitReached()
    return Credential.objects.create(
        user=None if team is not None else user,
        team=team,
        host=hostport,
        username=username,
        encrypted_token=crypto.encrypt(token),
        label=label,
        created_by=user,
    )


@transaction.atomic
def delete_credential(user: User, credential: Credential) -> None:
    """Delete ``credential``: one's own, or a team's as its owner or admin. Raises NotFound
    for a credential the user may not use and PermissionDenied for a team member."""
    if credential.user_id is not None:
        if credential.user_id != user.pk:
            raise NotFound("No such credential.")
    else:
        membership = Membership.objects.filter(team=credential.team, user=user).first()
        if membership is None:
            raise NotFound("No such credential.")
        if not membership.can_manage:
            raise PermissionDenied("Only team owners and admins can delete team credentials.")
    credential.delete()


def mark_credential_used(credential_id: int) -> None:
    """Record that a credential was used now (one UPDATE, safe to call concurrently)."""
    Credential.objects.filter(pk=credential_id).update(last_used_at=timezone.now())


def rotate_encryption_keys(batch_size: int = 500) -> tuple[int, list[int]]:
    """Re-encrypt every credential with the first key of BINDERY_ENCRYPTION_KEYS.

    Returns (how many were re-encrypted, ids that no configured key opens). Safe to run
    twice and to interrupt: each batch commits on its own.
    """
    rotated, unreadable = 0, list[int]()
    last_id = 0
    while True:
        with transaction.atomic():
            batch = list(
                Credential.objects.select_for_update()
                .filter(pk__gt=last_id)
                .order_by("pk")
                .only("pk", "encrypted_token")[:batch_size]
            )
            if not batch:
                return rotated, unreadable
            for credential in batch:
                try:
                    credential.encrypted_token = crypto.rotate(credential.encrypted_token)
                except CredentialUnreadable:
                    unreadable.append(credential.pk)
                    continue
                credential.save(update_fields=["encrypted_token"])
                rotated += 1
            last_id = batch[-1].pk
