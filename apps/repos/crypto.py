"""Credential tokens at rest: portal.crypto, with its failure as a credentials error
(``manage.py rotate_encryption_key`` re-encrypts them with the newest key)."""

from __future__ import annotations

from apps.repos.errors import CredentialUnreadable
from portal import crypto

encrypt = crypto.encrypt


def decrypt(stored: str) -> str:
    """The secret, or CredentialUnreadable when no configured key opens it."""
    try:
        return crypto.decrypt(stored)
    except crypto.SecretUnreadable:
        raise CredentialUnreadable() from None


def rotate(stored: str) -> str:
    """``stored`` re-encrypted with the first key. Raises CredentialUnreadable."""
    try:
        return crypto.rotate(stored)
    except crypto.SecretUnreadable:
        raise CredentialUnreadable() from None
