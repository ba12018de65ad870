"""How usage and limits read to people, for the pages: "31.5 of 40 hours left this month",
"Up to 2 GB per session", the sentence a launch form shows before launching. Reads only:
every number comes from ``apps.quotas.services`` (the same report the API returns)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from apps.accounts.models import User
from apps.quotas import ledger
from apps.quotas.limits import MONTHLY, POOL
from apps.quotas.models import UsageRecord
from apps.quotas.services import LimitUsage, UsageReport, preview, usage_for
from apps.repos.names import name_for
from apps.sessions.models import Session
from apps.teams.models import Team

TITLES = {
    "sessions": "Sessions at once",
    "cpu": "CPU per session",
    "memory": "Memory per session",
    "session_hours": "Session hours",
    "build_minutes": "Build minutes",
    "storage": "Storage per volume",
    "builds": "Builds at once",
}
# What a form field for each limit takes, said beside it.
FIELD_UNITS = {
    "sessions": "sessions at once",
    "cpu": "cores per session, e.g. 1 or 1.5",
    "memory": "per session, e.g. 2G or 512M",
    "session_hours": "hours per month",
    "build_minutes": "minutes per month",
    "storage": "per volume, e.g. 10G",
    "builds": "builds at once",
}
SIZES = frozenset({"memory", "storage"})
# The order people read them in: the monthly allowances first, the bounds of one session last.
ORDER = ("session_hours", "sessions", "build_minutes", "builds", "storage", "memory", "cpu")


# --- numbers --------------------------------------------------------------------------------


def number(value: float | int) -> str:
    """12.5, 40, 0.3: one decimal at most, none when whole."""
    text = f"{round(float(value), 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def size(value: float | int) -> str:
    """Bytes as ``filesizeformat`` says them, without a trailing ".0" ("2 GB", "1.5 GB")."""
    return re.sub(r"\.0(?=\s)", "", str(filesizeformat(int(value))))


def _plural(word: str, count: float | int) -> str:
    return word if count == 1 else f"{word}s"


def amount(name: str, value: float | int) -> str:
    """A value of limit ``name`` with its unit: "2 GB", "1.5 CPUs", "40 hours", "3 sessions"."""
    if name in SIZES:
        return size(value)
    if name == "cpu":
        return f"{number(value)} {_plural('CPU', value)}"
    if name == "session_hours":
        return f"{number(value)} {_plural('hour', value)}"
    if name == "build_minutes":
        return f"{number(value)} build {_plural('minute', value)}"
    if name == "sessions":
        return f"{number(value)} {_plural('session', value)}"
    if name == "builds":
        return f"{number(value)} {_plural('build', value)}"
    return number(value)


def form_value(name: str, value: float | int | None) -> str:
    """A limit as its form field shows it (and parses it back): "2G", "1.5", "" (unlimited)."""
    if value is None:
        return ""
    if name in SIZES:
        count = int(value)
        for suffix, unit in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
            if count >= unit and count % unit == 0:
                return f"{count // unit}{suffix}"
        return str(count)
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


# --- one limit, as a row with a bar ------------------------------------------------------------


@dataclass(frozen=True)
class LimitRow:
    """One limit as the usage pages show it. ``bar_value``/``bar_max`` are strings for a
    ``<progress>`` element (None: no bar, as for a per-session bound, which nothing uses up)."""

    name: str
    title: str
    headline: str
    note: str
    state: str  # "ok", "low" (80 % used), "out" (nothing left), "" (no bar)
    bar_value: str | None = None
    bar_max: str | None = None


def _bar(used: float | int, allowed: float | int) -> tuple[str, str, str]:
    if allowed <= 0:
        return "1", "1", "out"
    fraction = min(1.0, float(used) / float(allowed))
    state = "out" if used >= allowed else "low" if fraction >= 0.8 else "ok"
    return f"{min(float(used), float(allowed)):.4f}", f"{float(allowed):.4f}", state


def _renews(period: ledger.Period) -> str:
    return f"renews on {period.end:%-d %B %Y}"


def limit_row(
    limit: LimitUsage, period: ledger.Period, *, current: bool = True, volume: str = "a volume"
) -> LimitRow:
    """``volume`` names whose volume the storage limit is about ("your home volume")."""
    name, used, allowed, left = limit.name, limit.used, limit.allowed, limit.left
    title = TITLES.get(name, name)
    if name in ("sessions", "builds"):
        running = f"{number(used or 0)} running now"
        if allowed is None:
            return LimitRow(name, title, "Unlimited", running, "")
        value, top, state = _bar(used or 0, allowed)
        headline = f"{number(left or 0)} of {amount(name, allowed)} left"
        return LimitRow(name, title, headline, running, state, value, top)
    if name in MONTHLY:
        unit = "hours" if name == "session_hours" else "build minutes"
        spent = amount(name, used or 0)
        when = "this month" if current else f"in {period.name}"
        if allowed is None:
            return LimitRow(name, title, "Unlimited", f"{spent} used {when}", "")
        value, top, state = _bar(used or 0, allowed)
        if current:
            headline = f"{number(left or 0)} of {number(allowed)} {unit} left this month"
            note = f"{spent} used · {_renews(period)}"
        else:
            headline = f"{number(used or 0)} of {number(allowed)} {unit} used"
            note = f"In {period.name}, against today's limit"
        return LimitRow(name, title, headline, note, state, value, top)
    if name == "storage":
        if used is not None and allowed is not None:
            value, top, state = _bar(used, allowed)
            headline = f"{size(left or 0)} of {size(allowed)} left on {volume}"
            note = f"{size(used)} in use" if used else "Nothing stored yet"
            return LimitRow(name, title, headline, note, state, value, top)
        if allowed is None:
            note = f"{volume.capitalize()} holds {size(used)}" if used else ""
            return LimitRow(name, title, "Unlimited", note, "")
        return LimitRow(name, title, f"Up to {size(allowed)} per volume", "", "")
    # cpu, memory: a bound on one session, which nothing uses up.
    held = ""
    if used:
        held = f"Held by running sessions: {amount(name, used)}"
    if allowed is None:
        return LimitRow(name, title, "No limit per session", held, "")
    return LimitRow(name, title, f"Up to {amount(name, allowed)} per session", held, "")


def limit_rows(report: UsageReport, *, current: bool, volume: str = "a volume") -> list[LimitRow]:
    """Every limit of the report (this month), or the monthly ones (a past month: what is
    at once or per session has no history)."""
    by_name = {lim.name: lim for lim in report.limits}
    names = [n for n in ORDER if n in by_name and (current or n in MONTHLY)]
    return [limit_row(by_name[n], report.period, current=current, volume=volume) for n in names]


def cell(limit: LimitUsage) -> str:
    """One limit of one member, for the per-member table: "8.5 of 40 hours", "1 of 3
    sessions", "up to 2 GB" (a bound on one session or volume), "3 (unlimited)"."""
    name, used, allowed = limit.name, limit.used, limit.allowed
    if name not in POOL:  # a bound on one session or volume
        return "no limit" if allowed is None else f"up to {amount(name, allowed)}"
    if used is None:
        return "—" if allowed is None else f"— of {amount(name, allowed)}"
    if allowed is None:
        return f"{number(used)} (unlimited)"
    return f"{number(used)} of {amount(name, allowed)}"


# --- the month picker -------------------------------------------------------------------------


def months_with_usage(
    *, user_id: int | None = None, team_id: int | None = None, most: int = 12
) -> list[ledger.Period]:
    """This month, then earlier months that have ledger rows of the user (any launch of
    theirs) or of the team, newest first, ``most`` in all."""
    current = ledger.period_of(timezone.now())
    rows = UsageRecord.objects.filter(period__lt=current.first)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    if team_id is not None:
        rows = rows.filter(team_id=team_id)
    firsts: list[date] = list(
        rows.order_by("-period").values_list("period", flat=True).distinct()[: most - 1]
    )
    return [current, *(ledger.Period(first) for first in firsts)]


def period_from(text: str) -> tuple[ledger.Period, bool]:
    """The month ``?period=YYYY-MM`` asks for (this month when absent, unreadable or in the
    future), and whether it is this month."""
    current = ledger.period_of(timezone.now())
    try:
        period = ledger.parse_period(text) if text else current
    except ValueError:
        period = current
    if period.first > current.first:
        period = current
    return period, period == current


# --- before a launch --------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchPreview:
    """What a launch would use and what is left ("This launch will use up to 2 GB of memory
    and 1 CPU." "You have 2 of 3 sessions and 31.5 of 40 session hours left this month."),
    or the refusal it would meet: the API's sentence, word for word."""

    uses: str
    left: str
    refusal: str = ""
    code: str = ""
    limit: str = ""
    team: str = ""

    @property
    def refused(self) -> bool:
        return bool(self.refusal)

    @property
    def sentence(self) -> str:
        return " ".join(part for part in (self.uses, self.left) if part)


def _left_sentence(limits: list[LimitUsage], team: Team | None) -> str:
    by_name = {lim.name: lim for lim in limits}
    parts = []
    sessions, hours = by_name.get("sessions"), by_name.get("session_hours")
    if sessions is not None and sessions.allowed is not None:
        parts.append(f"{number(sessions.left or 0)} of {amount('sessions', sessions.allowed)}")
    monthly = hours is not None and hours.allowed is not None
    if hours is not None and hours.allowed is not None:
        parts.append(
            f"{number(hours.left or 0)} of {number(hours.allowed)} session "
            f"{_plural('hour', hours.allowed)}"
        )
    if not parts:
        return ""
    who = f"In {team.name}, you have" if team is not None else "You have"
    return f"{who} {' and '.join(parts)} left{' this month' if monthly else ''}."


def launch_preview(
    user: User | None, team: Team | None = None, *, anonymous_owner: str = ""
) -> LaunchPreview:
    admission, refusal, limits = preview(user, team, anonymous_owner=anonymous_owner)
    left = _left_sentence(limits, team)
    team_name = team.name if team is not None else ""
    if refusal is not None:
        return LaunchPreview("", left, refusal.message, refusal.code,
                             str(refusal.data.get("limit", "")), team_name)  # fmt: skip
    assert admission is not None
    memory = size(admission.memory_bytes)
    if admission.cpu is None:
        uses = f"This launch will use up to {memory} of memory, with no CPU limit."
    else:
        uses = f"This launch will use up to {memory} of memory and {amount('cpu', admission.cpu)}."
    return LaunchPreview(uses, left, team=team_name)


# --- the dashboard ----------------------------------------------------------------------------


def dashboard_usage(user: User) -> dict[str, Any]:
    """The dashboard's one line ("12.5 of 40 session hours left this month · 2 of 3 sessions
    left") and its running sessions told that this month's hours are about to run out."""
    report = usage_for(user)
    hours, sessions = report.get("session_hours"), report.get("sessions")
    parts = []
    if hours.allowed is None:
        parts.append("Unlimited session hours")
    else:
        parts.append(f"{number(hours.left or 0)} of {number(hours.allowed)} session hours left "
                     "this month")  # fmt: skip
    if sessions.allowed is None:
        parts.append("no limit on sessions at once")
    else:
        parts.append(f"{number(sessions.left or 0)} of {amount('sessions', sessions.allowed)} left")
    warned = (
        Session.objects.filter(user=user, status__in=Session.RUNNING, quota_warned_at__isnull=False)
        .select_related("build", "team")
        .order_by("quota_warned_at")
    )  # fmt: skip
    return {
        "summary": " · ".join(parts),
        "out": hours.left == 0 or sessions.left == 0,
        "warned": [
            {"id": s.pk, "name": name_for(s).label, "team": s.team.name if s.team else ""}
            for s in warned
        ],
    }
