"""Changes to accounts and personal API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.accounts import tokens
from apps.accounts.models import ApiToken, User
from portal.errors import BinderyError, InvalidInput

MAX_TOKENS_PER_USER = 100
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRejected(BinderyError):
    status = 401
    code = "TOKEN_INVALID"
    default_message = "The API token is not valid."


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown to the user once, never stored


@transaction.atomic
def create_api_token(user: User, name: str, expires_at: datetime | None = None) -> IssuedToken:
    """Issue a token for ``user``. Raises InvalidInput for a past expiry or too many tokens."""
    name = name.strip()
    if not name:
        raise InvalidInput("Give the token a name.", code="TOKEN_NAME_REQUIRED")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry must be in the future.", code="TOKEN_EXPIRY_IN_PAST")
    active = ApiToken.objects.filter(user=user, revoked_at__isnull=True).count()
    if active >= MAX_TOKENS_PER_USER:
        raise InvalidInput(
            f"You already have {active} tokens; revoke some first.", code="TOKEN_LIMIT_REACHED"
        )
    secret = tokens.generate()
    token = ApiToken.objects.create(
        user=user,
        name=name[:100],
        prefix=tokens.display_prefix(secret),
        digest=tokens.digest(secret),
        expires_at=expires_at,
    )
    return IssuedToken(token=token, secret=secret)


@transaction.atomic
def revoke_api_token(token: ApiToken) -> ApiToken:
    """Revoke a token (safe to call twice: the first revocation time is kept)."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def authenticate_api_token(raw: str) -> tuple[User, ApiToken]:
    """Return the user and token for a presented secret, or raise TokenRejected."""
    if not tokens.is_well_formed(raw):
        raise TokenRejected("The API token is malformed.", code="TOKEN_MALFORMED")
    token = ApiToken.objects.select_related("user").filter(digest=tokens.digest(raw)).first()
    if token is None or not token.user.is_active:
        raise TokenRejected()
    if token.revoked_at is not None:
        raise TokenRejected("The API token has been revoked.", code="TOKEN_REVOKED")
    if token.is_expired:
        raise TokenRejected("The API token has expired.", code="TOKEN_EXPIRED")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token.user, token


def parse_authorization_header(header: str) -> str | None:
    """The token in ``Authorization: token <t>`` or ``Bearer <t>``; None for other schemes.

    Raises TokenRejected for a recognised scheme with a missing or spaced value.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in {"token", "bearer"}:
        return None
    value = value.strip()
    if not value or " " in value:
        raise TokenRejected("The Authorization header is malformed.", code="TOKEN_MALFORMED")
    return value
