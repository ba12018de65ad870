"""Secrets never reach a log line: the filter on every handler redacts the bearer tokens
that travel in URL paths (share links ``/s/<token>``, team invitation links
``/teams/join/<token>/``, also percent-encoded inside a ``?next=``) and ``token=`` query
values, whatever logged them (``django.request`` logs the path of every 4xx)."""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    (re.compile(r"shr_[A-Za-z0-9_-]+"), "shr_[redacted]"),
    (re.compile(r"(/s/)(?!\s|$)[^/\s?#\"']+"), r"\1[redacted]"),
    (re.compile(r"(/teams/join/)[^/\s?#\"']+"), r"\1[redacted]"),
    (re.compile(r"(%2[Ff]teams%2[Ff]join%2[Ff])[^&\s\"'%]+"), r"\1[redacted]"),
    (re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+"), r"\1[redacted]"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
