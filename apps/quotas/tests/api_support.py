"""What the quota API tests share: the endpoints, rows for what no worker runs here (running
sessions and builds, ledger rows), reading a limit out of a usage body, and launching and
checking a refusal's shape.

No Celery worker runs in these tests: a launch creates its Session row (building or
launching) and, for a repository not built yet, a pending Build row, and stops there. A
"running" session or build is therefore a row in that state, as ``test_admit.py`` makes them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from apps.builds.models import Build
from apps.quotas import ledger
from apps.quotas.models import Quota, UsageRecord
from apps.sessions.models import Session

GIB = 1024**3
SLUG = "ocean-lab"
MINE = "/api/v1/usage/"
MINE_IN_TEAM = f"/api/v1/usage/?team={SLUG}"
TEAM_USAGE = f"/api/v1/teams/{SLUG}/usage/"
TEAM_CSV = f"/api/v1/teams/{SLUG}/usage.csv"
TEAM_QUOTA = f"/api/v1/teams/{SLUG}/quota/"
CEILING = f"/api/v1/teams/{SLUG}/ceiling/"
SESSIONS = "/api/v1/sessions/"

# One value of each limit, in the units of usage, tighter than the site's defaults (3
# sessions, 2 GiB, 50 builds in tests) so that each shows as the binding limit.
VALUES: dict[str, float | int] = {
    "sessions": 2, "cpu": 1.5, "memory": GIB, "session_hours": 40, "build_minutes": 120,
    "storage": 10 * GIB, "builds": 2,
}  # fmt: skip
REFUSAL_KEYS = {"error", "detail", "limit", "used", "allowed", "left", "resets_at"}


def member_quota_url(membership: Any) -> str:
    return f"/api/v1/teams/{SLUG}/memberships/{membership.pk}/quota/"


def user_quota_url(user: Any) -> str:
    return f"/api/v1/users/{user.pk}/quota/"


def limit_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of ``name`` in a usage body's ``limits``."""
    found = [row for row in body["limits"] if row["name"] == name]
    assert len(found) == 1, body
    return found[0]


def quota_rows() -> list[tuple[Any, ...]]:
    """Every Quota row as it is stored: what a refused PUT must leave unchanged."""
    return list(
        Quota.objects.order_by("pk").values_list(
            "pk", "scope", "user_id", "team_id", "membership_id", "values", "updated_at",
            "updated_by_id",
        )
    )  # fmt: skip


def a_build(user: Any = None, team: Any = None, *, status: str = "ready") -> Build:
    key = uuid.uuid4().hex
    return Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref=key[:40], resolved={}, build_key=key, status=status, requested_by=user,
        team=team,
    )  # fmt: skip


def running_session(
    user: Any, team: Any = None, *, cpu: float | None = None, memory_bytes: int = 0
) -> Session:
    """A session row in ``ready``: counts as one running now (no hours: no ``ready_at``)."""
    return Session.objects.create(
        user=user, team=team, build=a_build(user, team), hub_user=user.hub_name,
        provider="git", spec="x", status="ready", cpu=cpu, memory_bytes=memory_bytes,
    )  # fmt: skip


def running_build(user: Any, team: Any = None) -> Build:
    return a_build(user, team, status="running")


def this_month() -> ledger.Period:
    return ledger.period_of(timezone.now())


def last_month() -> ledger.Period:
    return this_month().previous()


def next_month_start() -> datetime:
    """Midnight of the first of next month in the site's time zone, computed here rather
    than by the ledger's Period."""
    local = timezone.now().astimezone(ZoneInfo(settings.TIME_ZONE))
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    later = first + timedelta(days=32)
    return datetime(later.year, later.month, 1, tzinfo=ZoneInfo(settings.TIME_ZONE))


def ledger_rows(
    kind: str, seconds: float, *, user: Any, team: Any = None,
    period: ledger.Period | None = None, rows: int = 1,
) -> list[UsageRecord]:  # fmt: skip
    """``rows`` ledger rows of ``kind`` (session or build time) in ``period`` (this month by
    default), ``seconds`` in all, for ``user`` (within ``team`` when given)."""
    period = period or this_month()
    made = []
    each = seconds / rows
    for i in range(rows):
        start = period.start + timedelta(seconds=i * each)
        row = UsageRecord(
            key=f"test:{kind}:{uuid.uuid4().hex}", kind=kind, period=period.first, start=start,
            end=start + timedelta(seconds=each), quantity=each, user=user, team=team,
            scope="team" if team is not None else "personal",
        )  # fmt: skip
        row.save()
        made.append(row)
    return made


def session_hours(hours: float, **owner: Any) -> list[UsageRecord]:
    return ledger_rows(UsageRecord.Kind.SESSION, hours * 3600, rows=max(1, int(hours)), **owner)


def build_minutes(minutes: float, **owner: Any) -> list[UsageRecord]:
    return ledger_rows(UsageRecord.Kind.BUILD, minutes * 60, **owner)


def launch(client: Any, repo: Any, **body: Any) -> Any:
    return client.post(SESSIONS, {"repo_url": repo.url, **body}, format="json")


def counts() -> tuple[int, int]:
    return Session.objects.count(), Build.objects.count()


def refusal(response: Any, error: str, limit: str) -> dict[str, Any]:
    """The 429 body, checked for its documented shape, error code and limit."""
    assert response.status_code == 429, (response.status_code, response.json())
    body = response.json()
    assert set(body) == REFUSAL_KEYS, body
    assert (body["error"], body["limit"]) == (error, limit)
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def set_limits(client: Any, url: str, values: dict[str, Any]) -> None:
    response = client.put(url, values, format="json")
    assert response.status_code == 200, response.json()
