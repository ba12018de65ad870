from __future__ import annotations

from typing import Any


def as_id(value: object) -> int:
    """A primary key from a URL or payload value; -1 (matches nothing) when not an integer."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1


def to_int(value: object, default: int) -> int:
    """An integer from a query parameter or header, or ``default``."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def raw_path_spec(request: Any, prefix: str, decoded: str) -> str:
    """The part of the request path after ``prefix``, still percent-encoded.

    mybinder's ``gl`` and ``git`` specs carry url-escaped URLs (``https%3A%2F%2F…``) that
    path decoding would turn into extra ``/``. ASGI servers (daphne) keep the raw path in
    the scope, WSGI servers in RAW_URI/REQUEST_URI; without either, ``decoded`` is all
    there is.
    """
    scope = getattr(request, "scope", None) or {}
    raw = scope.get("raw_path")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else ""
    if not text:
        meta = getattr(request, "META", {})
        text = str(meta.get("RAW_URI") or meta.get("REQUEST_URI") or "").split("?", 1)[0]
    if text.startswith(prefix):
        return text[len(prefix) :]
    return decoded


def advisory_xact_lock(key: str) -> None:
    """Hold a PostgreSQL advisory lock on ``key`` until the current transaction ends (call
    it inside ``transaction.atomic``). A no-op on SQLite, which serialises writers anyway."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])
