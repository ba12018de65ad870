"""Personal token format: ``bdy_`` + 40 url-safe characters; stored as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "bdy_"
_FORMAT = re.compile(r"^bdy_[A-Za-z0-9_-]{40}$")


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(30)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_well_formed(token: str) -> bool:
    return bool(_FORMAT.match(token))


def display_prefix(token: str) -> str:
    return token[: len(PREFIX) + 6]
