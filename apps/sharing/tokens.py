"""Share link secrets: ``shr_`` + 32 url-safe characters; stored as a SHA-256 digest."""

from __future__ import annotations

import re
import secrets

from apps.accounts.tokens import digest

PREFIX = "shr_"
_FORMAT = re.compile(r"^shr_[A-Za-z0-9_-]{32}$")

__all__ = ["PREFIX", "digest", "generate", "is_well_formed"]


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(24)


def is_well_formed(token: str) -> bool:
    return bool(_FORMAT.match(token))
