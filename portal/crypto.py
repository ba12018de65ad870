"""Secrets at rest (repository credentials, session tokens): Fernet (AES-128-CBC +
HMAC-SHA256) through MultiFernet over settings.BINDERY_ENCRYPTION_KEYS: the first key
encrypts, every key decrypts, and ``rotate`` re-encrypts with the first."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.errors import BinderyError


class SecretUnreadable(BinderyError):
    status = 500
    code = "SECRET_UNREADABLE"
    default_message = "A stored secret cannot be decrypted with the configured keys."


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("BINDERY_ENCRYPTION_KEYS is empty.")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "A BINDERY_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64 bytes)."
        ) from None


def _current() -> MultiFernet:
    return _fernet(tuple(settings.BINDERY_ENCRYPTION_KEYS))


def encrypt(secret: str) -> str:
    return _current().encrypt(secret.encode()).decode("ascii")


def decrypt(stored: str) -> str:
    """The secret, or SecretUnreadable when no configured key opens it."""
    try:
        return _current().decrypt(stored.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise SecretUnreadable() from None


def rotate(stored: str) -> str:
    """``stored`` re-encrypted with the first key. Raises SecretUnreadable."""
    try:
        return _current().rotate(stored.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretUnreadable() from None
