from __future__ import annotations


def as_id(value: object) -> int:
    """A primary key from a URL or payload value; -1 (matches nothing) when not an integer."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1
