"""Redact secrets from text before it is stored or shown (build logs, error messages)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
# Token shapes worth hiding even when we were not told about them.
_PATTERNS = [
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # userinfo in URLs
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"),  # GitLab personal access tokens
    re.compile(r"\bbdy_[A-Za-z0-9_-]{40}\b"),  # Bindery API tokens
    re.compile(r"(?i)(authorization:\s*(?:basic|bearer|token)\s+)\S+"),
]


class Redactor:
    """Replaces each known secret (and its URL-quoted and basic-auth forms) with ***."""

    def __init__(self, secrets: Iterable[str] = (), usernames: Iterable[str] = ()):
        variants: set[str] = set()
        names = list(usernames) or [""]
        for secret in secrets:
            if len(secret) < 4:
                continue
            variants.update({secret, quote(secret, safe=""), quote(secret)})
            for name in names:
                variants.add(base64.b64encode(f"{name}:{secret}".encode()).decode())
        # Longest first so a secret inside another variant is masked whole.
        self._variants = sorted(variants, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, MASK)
        for pattern in _PATTERNS:
            if pattern.groups:
                text = pattern.sub(lambda m: m.group(1) + MASK, text)
            else:
                text = pattern.sub(MASK, text)
        return text
