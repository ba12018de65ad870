"""Admission: may this launch start now, and with which resources?"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from apps.accounts.models import User
from apps.quotas.models import QuotaPolicy
from apps.teams.models import Team
from portal.errors import BinderyError


class QuotaExceeded(BinderyError):
    status = 429
    code = "QUOTA_EXCEEDED"


class BuildQuotaExceeded(QuotaExceeded):
    code = "BUILD_QUOTA_EXCEEDED"


def admit_build(user: User | None) -> None:
    """May ``user`` start one more build now? Raises BuildQuotaExceeded (429) when they
    already have ``BINDERY_MAX_BUILDS_PER_USER`` running; locks the user's row, so two
    requests at once cannot both pass. Anonymous builds are bounded by session admission."""
    if user is None or not user.is_authenticated:
        return
    from apps.builds.models import Build

    allowed = int(settings.BINDERY_MAX_BUILDS_PER_USER)
    User.objects.select_for_update().filter(pk=user.pk).first()
    used = Build.objects.filter(requested_by=user, status__in=Build.ACTIVE).count()
    if used >= allowed:
        raise BuildQuotaExceeded(
            f"You have {used} builds running, the most at once: wait for one to finish.",
            limit="builds",
            used=used,
            allowed=allowed,
            left=0,
        )


@dataclass(frozen=True)
class Admission:
    memory_bytes: int
    max_processes: int


def parse_size(text: str) -> int:
    """``"2G"`` → bytes. Accepts K, M, G, T suffixes (powers of 1024) or plain bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _policy_for(user: User | None, team: Team | None) -> tuple[int, int]:
    policy = None
    if team is not None:
        policy = QuotaPolicy.objects.select_for_update().filter(team=team).first()
    if policy is None and user is not None:
        policy = QuotaPolicy.objects.select_for_update().filter(user=user).first()
    if policy is not None:
        return policy.max_sessions, policy.memory_bytes
    return settings.BINDERY_MAX_SESSIONS_PER_USER, parse_size(settings.BINDERY_SESSION_MEMORY)


def admit(user: User | None, team: Team | None = None, *, anonymous_owner: str = "") -> Admission:
    """Refuse with QuotaExceeded (429: which limit, used, allowed) before any work starts.

    Call inside the transaction that creates the session: the policy row (or the user row)
    is locked, so two launches at once cannot both take the last place.
    """
    from apps.sessions.models import Session

    assert transaction.get_connection().in_atomic_block, "admit() needs a transaction"
    allowed, memory = _policy_for(user, team)
    if user is not None:
        User.objects.select_for_update().filter(pk=user.pk).first()  # serialise this user
        used = Session.objects.filter(user=user, status__in=Session.ACTIVE).count()
    else:
        allowed = settings.BINDERY_MAX_SESSIONS_ANONYMOUS
        used = Session.objects.filter(
            anonymous_owner=anonymous_owner, status__in=Session.ACTIVE
        ).count()
    if used >= allowed:
        raise QuotaExceeded(
            f"You already run {used} session{'s' if used != 1 else ''} (the limit is "
            f"{allowed}). Stop one before starting another.",
            limit="sessions",
            used=used,
            allowed=allowed,
        )
    return Admission(memory_bytes=memory, max_processes=settings.BINDERY_SESSION_PROCESSES)
