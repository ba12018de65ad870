"""The limits: their names and units, the site's defaults and ceilings, and which apply.

Seven limits, each optional (``None`` = unlimited), in the units the API speaks:

========================  ========  =====================================================
name                      unit      what it bounds
========================  ========  =====================================================
``sessions``              sessions  sessions running at once (pool)
``cpu``                   cores     CPU limit of one session (per session)
``memory``                bytes     memory limit of one session (per session)
``session_hours``         hours     wall time of running sessions per calendar month (pool)
``build_minutes``         minutes   wall time of builds per calendar month (pool)
``storage``               bytes     bytes one volume may hold (per volume)
``builds``                builds    builds running at once (pool)
========================  ========  =====================================================

Levels. The site sets defaults (from settings: a user, a team and a member within a team
without a limit of their own get them) and hard ceilings (``BINDERY_QUOTA_CEILINGS``, for
everyone). Staff set a user's limits and a team's ceiling; a team's admins set the team's
pool and each member's cap within it, never above the team's ceiling or the site's.

A personal launch is bounded by the site's ceilings and the user's limits, counting the
user's personal sessions, hours and builds. A team launch is bounded by the site's ceilings,
the team's ceiling and the team's pool, counting every member's team use, **and** by the
member's cap, counting the member's own use within the team. The tightest bound wins.

A level's ``values`` maps a name to a number, or to None (unlimited at that level); a name
it does not hold takes the site's default for that level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from django.conf import settings

from apps.builds.backends.disk import parse_size

LimitName = Literal[
    "sessions", "cpu", "memory", "session_hours", "build_minutes", "storage", "builds"
]
NAMES: tuple[LimitName, ...] = (
    "sessions", "cpu", "memory", "session_hours", "build_minutes", "storage", "builds",
)  # fmt: skip
UNITS: dict[str, str] = {
    "sessions": "sessions",
    "cpu": "cores",
    "memory": "bytes",
    "session_hours": "hours",
    "build_minutes": "minutes",
    "storage": "bytes",
    "builds": "builds",
}
# Pool limits count use (at once, or this month); the others bound one session or volume.
POOL: frozenset[str] = frozenset({"sessions", "session_hours", "build_minutes", "builds"})
MONTHLY: frozenset[str] = frozenset({"session_hours", "build_minutes"})
INTEGER: frozenset[str] = frozenset({"sessions", "memory", "storage", "builds"})
# The least a limit may be set to (0 sessions or builds: nothing may start).
MINIMUM: dict[str, float] = {
    "sessions": 0, "cpu": 0.01, "memory": 256 * 1024**2, "session_hours": 0,
    "build_minutes": 0, "storage": 0, "builds": 0,
}  # fmt: skip
LEVELS = ("user", "team", "member")

Values = Mapping[str, float | int | None]


def _optional_size(name: str) -> int | None:
    text = str(getattr(settings, name, "") or "").strip()
    return parse_size(text) if text else None


def _optional_number(name: str) -> float | None:
    value = getattr(settings, name, None)
    return None if value in (None, "") else float(value)


def _ceilings() -> dict[str, float | int | None]:
    raw = getattr(settings, "BINDERY_QUOTA_CEILINGS", {}) or {}
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    return clean_values(raw, what="BINDERY_QUOTA_CEILINGS")


def site_defaults(level: str) -> dict[str, float | int | None]:
    """The site's defaults for a level (``user``, ``team`` or ``member``), read from the
    settings at each call. A member without a cap of their own within a team has what a
    user has alone; a team's pool is unlimited unless ``BINDERY_QUOTA_TEAM_DEFAULTS`` says."""
    personal: dict[str, float | int | None] = {
        "sessions": int(settings.BINDERY_MAX_SESSIONS_PER_USER),
        "cpu": _optional_number("BINDERY_SESSION_CPU"),
        "memory": parse_size(str(settings.BINDERY_SESSION_MEMORY)),
        "session_hours": _optional_number("BINDERY_SESSION_HOURS_PER_MONTH"),
        "build_minutes": _optional_number("BINDERY_BUILD_MINUTES_PER_MONTH"),
        "storage": _optional_size("BINDERY_VOLUME_STORAGE"),
        "builds": int(settings.BINDERY_MAX_BUILDS_PER_USER),
    }
    if level in ("user", "member"):
        return personal
    raw = getattr(settings, "BINDERY_QUOTA_TEAM_DEFAULTS", {}) or {}
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    team: dict[str, float | int | None] = dict.fromkeys(NAMES, None)
    # One session's size and one volume's bytes default to the site's, like a user's.
    team.update({"cpu": personal["cpu"], "memory": personal["memory"],
                 "storage": personal["storage"]})  # fmt: skip
    team.update(clean_values(raw, what="BINDERY_QUOTA_TEAM_DEFAULTS"))
    return team


def machine_bounds() -> dict[str, float | int | None]:
    """What one session may never ask for beyond, whatever the limits say: the cores and
    the memory this machine has (``BINDERY_SESSION_CPU_MAX``/``BINDERY_SESSION_MEMORY_MAX``
    override it, e.g. with a cluster node's size). A bound on requests, not a default: a
    session that asks for nothing gets its limits (no CPU limit when none is set)."""
    cpu = _optional_number("BINDERY_SESSION_CPU_MAX") or float(os.cpu_count() or 1)
    memory = _optional_size("BINDERY_SESSION_MEMORY_MAX")
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            memory = None
    return {"cpu": cpu, "memory": memory}


def site_ceilings() -> dict[str, float | int | None]:
    """The hard ceilings for everyone (``BINDERY_QUOTA_CEILINGS``)."""
    ceilings = _ceilings()
    return {name: ceilings.get(name) for name in NAMES}


def team_ceiling_defaults() -> dict[str, float | int | None]:
    """A team's ceiling until staff set one: what one person has alone (the user defaults),
    each overridden by ``BINDERY_QUOTA_TEAM_CEILING``. Anyone may create a team, so a team
    made by a user grants nothing a user could not have; staff raise a team's ceiling."""
    raw = getattr(settings, "BINDERY_QUOTA_TEAM_CEILING", {}) or {}
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    out = site_defaults("user")
    out.update(clean_values(raw, what="BINDERY_QUOTA_TEAM_CEILING"))
    return out


def person_limits() -> dict[str, float | int | None]:
    """Bounds on everything one person runs at once, personal and for every team together
    (so that joining or creating many teams does not multiply what one person may hold)."""
    limits: dict[str, float | int | None] = dict.fromkeys(NAMES, None)
    limits["sessions"] = int(settings.BINDERY_MAX_SESSIONS_PER_PERSON)
    limits["builds"] = int(settings.BINDERY_MAX_BUILDS_PER_PERSON)
    return limits


def anonymous_limits() -> dict[str, float | int | None]:
    """Visitors without an account: one session of the site's default size, no builds of
    their own beyond the session's, no monthly counts."""
    limits: dict[str, float | int | None] = dict.fromkeys(NAMES, None)
    personal = site_defaults("user")
    limits["sessions"] = int(settings.BINDERY_MAX_SESSIONS_ANONYMOUS)
    limits["cpu"], limits["memory"] = personal["cpu"], personal["memory"]
    return limits


class InvalidLimit(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def clean_values(raw: Mapping[str, Any], *, what: str = "limits") -> dict[str, float | int | None]:
    """Validated values: known names only, numbers (or None) at or above the minimum,
    integers for the integral limits. Raises InvalidLimit naming the first bad one."""
    if not isinstance(raw, Mapping):
        raise InvalidLimit("", f"{what} must be an object of limit names.")
    out: dict[str, float | int | None] = {}
    for name, value in raw.items():
        if name not in NAMES:
            raise InvalidLimit(str(name), f"Unknown limit {name!r}: one of {', '.join(NAMES)}.")
        if value is None:
            out[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidLimit(name, f"{name} must be a number or null (unlimited).")
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidLimit(name, f"{name} must be a finite number.")
        if name in INTEGER:
            if int(value) != value:
                raise InvalidLimit(name, f"{name} must be a whole number of {UNITS[name]}.")
            value = int(value)
        if value < MINIMUM[name]:
            least = (f"{MINIMUM[name] / 1024**2:g} MiB" if name == "memory"
                     else f"{MINIMUM[name]:g} {UNITS[name]}")  # fmt: skip
            raise InvalidLimit(name, f"{name} must be at least {least}.")
        if value > 10**15:
            raise InvalidLimit(name, f"{name} is too large.")
        out[name] = value
    return out


def tighter(a: float | int | None, b: float | int | None) -> float | int | None:
    """The tighter of two bounds (None = unlimited)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def merged(level: str, values: Values | None) -> dict[str, float | int | None]:
    """A level's values over the site's defaults for that level."""
    out = site_defaults(level)
    out.update(values or {})
    return out
