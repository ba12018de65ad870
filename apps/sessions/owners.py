"""Anonymous launches (BINDERY_ANONYMOUS_LAUNCH) belong to the visitor's browser session."""

from __future__ import annotations

import secrets
from typing import Any

SESSION_KEY = "bindery_anonymous_owner"


def anonymous_owner(session: Any) -> str:
    """The visitor's owner id, made on first use (``session``: a Django session)."""
    owner = session.get(SESSION_KEY)
    if not owner:
        owner = secrets.token_hex(16)
        session[SESSION_KEY] = owner
    return str(owner)


def existing_owner(session: Any) -> str:
    """The visitor's owner id if they have launched anything, else ""."""
    return str(session.get(SESSION_KEY, "")) if session is not None else ""
