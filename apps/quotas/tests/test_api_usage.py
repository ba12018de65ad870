"""Usage over the API: month rollover in the site's time zone (past months keep their
hours, this month starts from nothing), and the team's usage per member and as CSV.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.quotas import ledger
from apps.quotas.limits import NAMES
from apps.quotas.models import UsageRecord
from apps.quotas.tests.api_support import (
    MINE,
    SLUG,
    TEAM_CSV,
    TEAM_USAGE,
    build_minutes,
    last_month,
    launch,
    limit_of,
    member_quota_url,
    next_month_start,
    refusal,
    running_session,
    session_hours,
    set_limits,
    this_month,
    user_quota_url,
)
from apps.sessions.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True)


@pytest.fixture
def new_repo(git_host):
    """``new_repo()``: a repository never built (a launch of it needs a new build)."""

    def make():
        return git_host.create_repo(f"org/api-{uuid.uuid4().hex[:10]}", {"requirements.txt": ""})

    return make


# --- month rollover --------------------------------------------------------------------------


def test_last_months_hours_do_not_count_this_month(crew, staff, token_client, new_repo):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"session_hours": 2})
    past = last_month()
    session_hours(2, user=user, period=past)
    client = token_client(user)
    now = limit_of(client.get(MINE).json(), "session_hours")
    assert (now["used"], now["allowed"], now["left"]) == (0, 2, 2)
    assert datetime.fromisoformat(now["resets_at"]) == next_month_start()
    then = client.get(f"{MINE}?period={past.label}").json()
    assert then["period"]["label"] == past.label
    assert datetime.fromisoformat(then["period"]["start"]) == past.start
    assert datetime.fromisoformat(then["period"]["end"]) == this_month().start
    hours = limit_of(then, "session_hours")
    assert (hours["used"], hours["allowed"], hours["left"]) == (2.0, 2, 0)
    assert "resets_at" not in hours
    assert limit_of(then, "sessions")["used"] is None  # at-once limits have no history
    assert launch(client, new_repo()).status_code == 201


def test_a_teams_past_month_shows_its_hours(crew, token_client):
    past = last_month()
    session_hours(3, user=crew.member, team=crew.team, period=past)
    client = token_client(crew.admin)
    assert limit_of(client.get(TEAM_USAGE).json(), "session_hours")["used"] == 0
    then = client.get(f"{TEAM_USAGE}?period={past.label}&by=member").json()
    assert limit_of(then, "session_hours")["used"] == 3.0
    by_name = {m["user"]["username"]: m for m in then["members"]}
    assert limit_of(by_name["member"], "session_hours")["used"] == 3.0
    assert limit_of(by_name["admin"], "session_hours")["used"] == 0


@pytest.mark.parametrize("text", ["2026", "2026-13", "26-11", "november", "2026-1", "9999-12"])
def test_a_malformed_period_is_400(text, crew, token_client):
    for url in (MINE, TEAM_USAGE, TEAM_CSV):
        response = token_client(crew.owner).get(f"{url}?period={text}")
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"] == "PERIOD_INVALID"


def test_the_month_boundary_follows_the_sites_time_zone(settings):
    moment = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    settings.TIME_ZONE = "UTC"
    assert ledger.period_of(moment).label == "2026-12"
    settings.TIME_ZONE = "America/New_York"
    period = ledger.period_of(moment)  # 22:00 on 30 November in New York
    assert period.label == "2026-11"
    assert period.start.isoformat() == "2026-11-01T00:00:00-04:00"
    assert period.end.isoformat() == "2026-12-01T00:00:00-05:00"
    assert ledger.period_of(datetime(2026, 12, 1, 5, 0, tzinfo=UTC)).label == "2026-12"


def test_resets_at_is_midnight_of_next_month_in_the_sites_time_zone(
    crew, staff, token_client, new_repo, settings
):
    settings.TIME_ZONE = "America/New_York"
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"session_hours": 1})
    session_hours(1, user=user)
    body = refusal(launch(token_client(user), new_repo()), "QUOTA_EXCEEDED", "session_hours")
    resets = datetime.fromisoformat(body["resets_at"])
    assert resets == next_month_start()
    new_york = resets.astimezone(ZoneInfo("America/New_York"))
    assert (new_york.day, new_york.hour, new_york.minute) == (1, 0, 0)
    assert resets.utcoffset() == new_york.utcoffset() != timedelta(0)


def test_a_session_running_over_midnight_new_york_is_split_between_the_months(
    crew, settings, token_client
):
    settings.TIME_ZONE = "America/New_York"
    ready = datetime(2026, 12, 1, 4, 58, tzinfo=UTC)  # 23:58 on 30 November in New York
    session = running_session(crew.outsider)
    Session.objects.filter(pk=session.pk).update(ready_at=ready)
    assert ledger.account_session(session.pk, now=ready + timedelta(minutes=4)) == 4
    periods = UsageRecord.objects.filter(session=session).order_by("start")
    assert [str(p) for p in periods.values_list("period", flat=True)] == [
        "2026-11-01", "2026-11-01", "2026-12-01", "2026-12-01"]  # fmt: skip
    november = UsageRecord.objects.filter(session=session, period="2026-11-01")
    assert sum(november.values_list("quantity", flat=True)) == 120.0
    then = token_client(crew.outsider).get(f"{MINE}?period=2026-11").json()
    assert limit_of(then, "session_hours")["used"] == round(120 / 3600, 4)
    assert then["period"]["end"] == "2026-12-01T00:00:00-05:00"


# --- the team's usage per member, and as CSV -------------------------------------------------


@pytest.fixture
def team_use(crew):
    """This month: the member ran 1 hour and built 30 minutes for the team, the admin ran
    half an hour; the member also ran 2 hours of their own, and has one team session on."""
    team = crew.team
    session_hours(1, user=crew.member, team=team)
    build_minutes(30, user=crew.member, team=team)
    session_hours(0.5, user=crew.admin, team=team)
    session_hours(2, user=crew.member)
    running_session(crew.member, team)
    return crew


def test_team_usage_totals_for_members(team_use, token_client):
    crew = team_use
    body = token_client(crew.member).get(TEAM_USAGE).json()
    assert "members" not in body
    assert [row["name"] for row in body["limits"]] == list(NAMES)
    assert limit_of(body, "session_hours")["used"] == 1.5
    assert limit_of(body, "build_minutes")["used"] == 30.0
    assert limit_of(body, "sessions")["used"] == 1


def test_team_usage_by_member_for_admins(team_use, token_client):
    crew = team_use
    body = token_client(crew.admin).get(f"{TEAM_USAGE}?by=member").json()
    assert limit_of(body, "session_hours")["used"] == 1.5
    members = {m["user"]["username"]: m for m in body["members"]}
    assert set(members) == {"owner", "admin", "member"}
    member = members["member"]
    assert (member["membership"], member["role"]) == (crew.member_m.pk, "member")
    assert member["user"] == {"id": crew.member.pk, "username": "member",
                              "email": crew.member.email}  # fmt: skip
    assert [row["name"] for row in member["limits"]] == list(NAMES)
    used = {name: limit_of(member, name)["used"] for name in ("sessions", "session_hours",
                                                              "build_minutes")}  # fmt: skip
    assert used == {"sessions": 1, "session_hours": 1.0, "build_minutes": 30.0}
    assert limit_of(members["admin"], "session_hours")["used"] == 0.5
    assert limit_of(members["owner"], "session_hours")["used"] == 0


@pytest.mark.parametrize(("role", "status", "code"), [
    ("member", 403, "PERMISSION_DENIED"), ("outsider", 404, "NOT_FOUND"),
    ("anonymous", 401, "NOT_AUTHENTICATED"),
])  # fmt: skip
def test_per_member_usage_and_csv_are_for_admins_only(role, status, code, team_use,
                                                      token_client):  # fmt: skip
    client = token_client(getattr(team_use, role))
    for url in (f"{TEAM_USAGE}?by=member", TEAM_CSV):
        response = client.get(url)
        assert response.status_code == status, url
        assert response.json()["error"] == code
        assert "members" not in response.json()


def test_the_csv_export_parses_with_the_expected_columns(team_use, token_client):
    crew = team_use
    set_limits(token_client(crew.owner), member_quota_url(crew.member_m), {"session_hours": 10})
    response = token_client(crew.owner).get(TEAM_CSV)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    label = this_month().label
    assert f'filename="{SLUG}-usage-{label}.csv"' in response["Content-Disposition"]
    reader = csv.DictReader(io.StringIO(response.content.decode()))
    expected = ["member", "email", "role", "period"]
    for name in NAMES:
        expected += [f"{name}_used", f"{name}_allowed"]
    assert reader.fieldnames == expected
    rows = {row["member"]: row for row in reader}
    assert set(rows) == {"owner", "admin", "member"}
    member = rows["member"]
    assert (member["email"], member["role"], member["period"]) == (
        crew.member.email, "member", label)  # fmt: skip
    assert float(member["session_hours_used"]) == 1.0
    assert float(member["session_hours_allowed"]) == 10
    assert float(member["build_minutes_used"]) == 30.0
    assert member["build_minutes_allowed"] == ""  # unlimited
    assert int(member["sessions_used"]) == 1
    assert float(rows["admin"]["session_hours_used"]) == 0.5


def test_the_csv_export_of_a_past_month(crew, token_client):
    past = last_month()
    session_hours(4, user=crew.member, team=crew.team, period=past)
    response = token_client(crew.admin).get(f"{TEAM_CSV}?period={past.label}")
    assert response.status_code == 200
    assert f"-usage-{past.label}.csv" in response["Content-Disposition"]
    rows = {row["member"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert float(rows["member"]["session_hours_used"]) == 4.0
    assert rows["member"]["period"] == past.label
    assert rows["member"]["sessions_used"] == ""  # at-once limits have no history


def test_the_csv_export_answers_a_client_that_asks_for_csv(crew, token_client):
    """The schema documents ``text/csv``: a client sending ``Accept: text/csv`` gets it."""
    response = token_client(crew.owner).get(TEAM_CSV, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")


def test_the_csv_export_neutralises_formulas_in_names(crew, token_client):
    crew.member.email = "=HYPERLINK(1)@example.org"
    crew.member.save(update_fields=["email"])
    response = token_client(crew.owner).get(TEAM_CSV)
    rows = {row["member"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows["member"]["email"] == "'=HYPERLINK(1)@example.org"


def test_member_usage_queries_do_not_grow_with_the_team(crew, token_client):
    """A list endpoint: the queries for 3 members and for 12 are the same number."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.teams.models import Membership, Role

    client = token_client(crew.admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"{TEAM_USAGE}?by=member").status_code == 200
        return len(captured)

    queries()  # the token's first use is recorded once: not part of the endpoint's cost
    three = queries()
    for _ in range(9):
        Membership.objects.create(team=crew.team, user=UserFactory(), role=Role.MEMBER)
    assert queries() == three
