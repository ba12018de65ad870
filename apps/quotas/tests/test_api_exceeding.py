"""Exceeding each limit through ``POST /api/v1/sessions/``: the documented 429 shape
(``error``, ``detail``, ``limit``, ``used``, ``allowed``, ``left``, ``resets_at``) and no
Session or Build row made; and the team's pool against a member's cap.

Launches resolve against a real git server on 127.0.0.1; no worker runs, so a launch stops at
its Session row (and a pending Build for a repository not built yet). Use that is "running"
is made of rows (``api_support``); the one test of a reused environment runs a real uv build.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds import services as build_services
from apps.builds.models import Build
from apps.builds.tests.helpers import envs_beside_the_cache
from apps.quotas.models import UsageRecord
from apps.quotas.tests.api_support import (
    GIB,
    MINE,
    MINE_IN_TEAM,
    SLUG,
    TEAM_QUOTA,
    TEAM_USAGE,
    build_minutes,
    counts,
    last_month,
    launch,
    limit_of,
    member_quota_url,
    next_month_start,
    refusal,
    running_build,
    running_session,
    session_hours,
    set_limits,
    this_month,
    user_quota_url,
)
from apps.sessions.models import Session, Volume

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


# --- exceeding each limit --------------------------------------------------------------------


def test_sessions_at_once(crew, staff, token_client, new_repo):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"sessions": 1})
    running_session(user)
    before = counts()
    body = refusal(launch(token_client(user), new_repo()), "QUOTA_EXCEEDED", "sessions")
    assert (body["used"], body["allowed"], body["left"], body["resets_at"]) == (1, 1, 0, None)
    assert "your limit" in body["detail"]
    assert counts() == before


@pytest.mark.parametrize(
    ("name", "allowed", "asked", "field"),
    [("cpu", 1.0, 2.0, "cpu"), ("memory", GIB, 2 * GIB, "memory")],
)
def test_asking_for_more_cpu_or_memory_than_one_session_may_have(
    name, allowed, asked, field, crew, staff, token_client, new_repo
):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {name: allowed})
    repo = new_repo()
    before = counts()
    body = refusal(launch(token_client(user), repo, **{field: asked}), "QUOTA_EXCEEDED", name)
    assert (body["used"], body["allowed"], body["left"], body["resets_at"]) == (
        asked, allowed, allowed, None)  # fmt: skip
    assert counts() == before
    # exactly the limit is admitted, and the session gets what it asked for
    admitted = launch(token_client(user), repo, **{field: allowed})
    assert admitted.status_code == 201, admitted.json()
    session = Session.objects.get(pk=admitted.json()["id"])
    assert (session.cpu if name == "cpu" else session.memory_bytes) == allowed


def test_a_launch_asking_nothing_gets_the_limits(crew, staff, token_client, new_repo):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"cpu": 1.5, "memory": GIB})
    response = launch(token_client(user), new_repo())
    assert response.status_code == 201, response.json()
    session = Session.objects.get(pk=response.json()["id"])
    assert (session.cpu, session.memory_bytes) == (1.5, GIB)


def test_session_hours_used_up_this_month(crew, staff, token_client, new_repo):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"session_hours": 2})
    session_hours(1.5, user=user)
    repo = new_repo()
    assert launch(token_client(user), repo).status_code == 201  # half an hour left
    Session.objects.filter(user=user).update(status="stopped")
    session_hours(0.5, user=user)
    before = counts()
    body = refusal(launch(token_client(user), repo), "QUOTA_EXCEEDED", "session_hours")
    assert (body["used"], body["allowed"], body["left"]) == (2.0, 2, 0)
    assert datetime.fromisoformat(body["resets_at"]) == next_month_start()
    assert this_month().name in body["detail"]
    assert counts() == before


def test_team_session_hours_count_every_members_team_time(crew, token_client, new_repo):
    set_limits(token_client(crew.owner), TEAM_QUOTA, {"session_hours": 3})
    team = crew.team
    session_hours(2, user=crew.member, team=team)
    session_hours(1, user=crew.admin, team=team)
    session_hours(5, user=crew.owner)  # personal: not the team's
    before = counts()
    response = launch(token_client(crew.owner), new_repo(), team=SLUG)
    body = refusal(response, "QUOTA_EXCEEDED", "session_hours")
    assert (body["used"], body["allowed"], body["left"]) == (3.0, 3, 0)
    assert "Ocean Lab" in body["detail"]
    assert datetime.fromisoformat(body["resets_at"]) == next_month_start()
    assert counts() == before
    # the owner's personal launches are bounded by their own hours, not the team's
    assert launch(token_client(crew.owner), new_repo()).status_code == 201


def test_build_minutes_used_up_refuse_a_launch_that_needs_a_new_build(
    crew, staff, token_client, new_repo
):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"build_minutes": 10})
    build_minutes(10, user=user)
    before = counts()
    body = refusal(launch(token_client(user), new_repo()), "BUILD_QUOTA_EXCEEDED",
                   "build_minutes")  # fmt: skip
    assert (body["used"], body["allowed"], body["left"]) == (10.0, 10, 0)
    assert datetime.fromisoformat(body["resets_at"]) == next_month_start()
    assert counts() == before


def test_build_minutes_of_last_month_or_of_a_team_do_not_count(crew, staff, token_client,
                                                               new_repo):  # fmt: skip
    user = crew.member
    set_limits(token_client(staff), user_quota_url(user), {"build_minutes": 10})
    build_minutes(10, user=user, period=last_month())
    build_minutes(10, user=user, team=crew.team)
    response = launch(token_client(user), new_repo())
    assert response.status_code == 201, response.json()
    assert Build.objects.filter(requested_by=user, status="pending").count() == 1


@pytest.mark.build
@pytest.mark.django_db(transaction=True)
def test_a_launch_that_reuses_a_ready_environment_is_admitted_and_costs_nothing(
    crew, staff, token_client, new_repo, settings, tmp_path
):
    """A real build (uv offline from the shared cache) makes the environment; once the
    month's build minutes are used up, launching the same repository again still starts (no
    build, no ledger row), while a repository not built yet is refused."""
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    user = crew.outsider
    client = token_client(user)
    repo = new_repo()
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        first = launch(client, repo)
        assert first.status_code == 201, first.json()
        built = Build.objects.get(pk=first.json()["build"])
        assert build_services.execute_build(built.pk) == Build.Status.READY
        assert UsageRecord.objects.filter(kind="build", build=built).count() == 1
        Session.objects.filter(user=user).update(status="stopped")

        used = limit_of(client.get(MINE).json(), "build_minutes")["used"]
        assert used > 0
        set_limits(token_client(staff), user_quota_url(user), {"build_minutes": 1})
        build_minutes(1, user=user)  # with the real build: over the limit
        rows, builds = UsageRecord.objects.count(), Build.objects.count()

        again = launch(client, repo)
        assert again.status_code == 201, again.json()
        assert again.json()["build"] == built.pk and again.json()["status"] == "launching"
        assert Build.objects.count() == builds
        assert UsageRecord.objects.count() == rows
        assert limit_of(client.get(MINE).json(), "build_minutes")["used"] == round(used + 1, 4)

        Session.objects.filter(user=user).update(status="stopped")
        sessions = Session.objects.count()
        body = refusal(launch(client, new_repo()), "BUILD_QUOTA_EXCEEDED", "build_minutes")
        assert body["allowed"] == 1 and body["left"] == 0
        assert (Session.objects.count(), Build.objects.count()) == (sessions, builds)


def test_a_member_cap_on_build_minutes_and_the_teams_builds_at_once(crew, token_client,
                                                                    new_repo):  # fmt: skip
    admin = token_client(crew.admin)
    set_limits(admin, member_quota_url(crew.member_m), {"build_minutes": 5})
    build_minutes(5, user=crew.member, team=crew.team)
    before = counts()
    body = refusal(launch(token_client(crew.member), new_repo(), team=SLUG),
                   "BUILD_QUOTA_EXCEEDED", "build_minutes")  # fmt: skip
    assert (body["used"], body["allowed"], body["left"]) == (5.0, 5, 0)
    assert "your limit in Ocean Lab" in body["detail"]
    assert counts() == before
    # the cap is the member's: the admin's team launch builds
    assert launch(admin, new_repo(), team=SLUG).status_code == 201
    # the team may build one at a time: the admin's pending build fills the pool
    set_limits(admin, TEAM_QUOTA, {"builds": 1})
    before = counts()
    body = refusal(launch(token_client(crew.owner), new_repo(), team=SLUG),
                   "BUILD_QUOTA_EXCEEDED", "builds")  # fmt: skip
    assert (body["used"], body["allowed"], body["left"]) == (1, 1, 0)
    assert "Ocean Lab" in body["detail"]
    assert counts() == before


def test_a_home_volume_over_its_storage_limit_refuses_launches_and_is_kept(
    crew, staff, token_client, new_repo
):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"storage": GIB})
    measured = datetime(2026, 1, 2, tzinfo=UTC)
    volume = Volume.objects.create(user=user, size_bytes=2 * GIB, size_measured_at=measured)
    before = counts()
    body = refusal(launch(token_client(user), new_repo()), "STORAGE_QUOTA_EXCEEDED", "storage")
    assert (body["used"], body["allowed"], body["left"], body["resets_at"]) == (
        2 * GIB, GIB, 0, None)  # fmt: skip
    assert "nothing was deleted" in body["detail"]
    assert counts() == before
    volume.refresh_from_db()
    assert (volume.size_bytes, volume.size_measured_at) == (2 * GIB, measured)
    # at the limit is not over it
    Volume.objects.filter(pk=volume.pk).update(size_bytes=GIB)
    assert launch(token_client(user), new_repo()).status_code == 201


def test_a_team_volume_over_the_teams_storage_limit_refuses_team_launches_only(
    crew, token_client, new_repo
):
    set_limits(token_client(crew.owner), TEAM_QUOTA, {"storage": GIB})
    volume = Volume.objects.create(team=crew.team, size_bytes=3 * GIB)
    member = token_client(crew.member)
    before = counts()
    body = refusal(launch(member, new_repo(), team=SLUG), "STORAGE_QUOTA_EXCEEDED", "storage")
    assert (body["used"], body["allowed"], body["left"]) == (3 * GIB, GIB, 0)
    assert "Ocean Lab" in body["detail"]
    assert counts() == before
    assert Volume.objects.get(pk=volume.pk).size_bytes == 3 * GIB
    assert launch(member, new_repo()).status_code == 201  # personal: the team's volume not mounted


def test_builds_at_once(crew, staff, token_client, new_repo):
    user = crew.outsider
    set_limits(token_client(staff), user_quota_url(user), {"builds": 1})
    running_build(user)
    before = counts()
    body = refusal(launch(token_client(user), new_repo()), "BUILD_QUOTA_EXCEEDED", "builds")
    assert (body["used"], body["allowed"], body["left"], body["resets_at"]) == (1, 1, 0, None)
    assert counts() == before


def test_anonymous_cannot_launch_over_the_api(crew, token_client, new_repo):
    before = counts()
    response = launch(token_client(None), new_repo())
    assert response.status_code == 401
    assert response.json()["error"] == "NOT_AUTHENTICATED"
    assert counts() == before


def test_an_outsider_cannot_launch_for_the_team(crew, token_client, new_repo):
    before = counts()
    response = launch(token_client(crew.outsider), new_repo(), team=SLUG)
    assert response.status_code == 404 and response.json()["error"] == "NOT_FOUND"
    assert counts() == before


# --- the team's pool and a member's cap ------------------------------------------------------


@pytest.fixture
def pool_of_three(crew, token_client):
    """The team may run 3 sessions at once; the member 1 of them."""
    set_limits(token_client(crew.admin), TEAM_QUOTA, {"sessions": 3})
    set_limits(token_client(crew.admin), member_quota_url(crew.member_m), {"sessions": 1})
    return crew


def test_the_member_cap_refuses_the_members_second_team_launch(pool_of_three, token_client,
                                                               new_repo):  # fmt: skip
    crew = pool_of_three
    repo = new_repo()
    member = token_client(crew.member)
    assert launch(member, repo, team=SLUG).status_code == 201
    before = counts()
    body = refusal(launch(member, repo, team=SLUG), "QUOTA_EXCEEDED", "sessions")
    assert (body["used"], body["allowed"], body["left"]) == (1, 1, 0)
    assert "Ocean Lab" in body["detail"] and "your limit in Ocean Lab" in body["detail"]
    assert counts() == before
    # the team still has room: the admin launches
    admitted = launch(token_client(crew.admin), repo, team=SLUG)
    assert admitted.status_code == 201, admitted.json()
    assert Session.objects.filter(team=crew.team, status__in=Session.ACTIVE).count() == 2
    row = limit_of(member.get(MINE_IN_TEAM).json(), "sessions")
    assert (row["used"], row["allowed"], row["left"]) == (1, 1, 0)


def test_a_full_pool_refuses_anyones_team_launch_with_the_teams_limit(
    pool_of_three, token_client, new_repo
):
    crew = pool_of_three
    repo = new_repo()
    assert launch(token_client(crew.member), repo, team=SLUG).status_code == 201
    assert launch(token_client(crew.admin), repo, team=SLUG).status_code == 201
    assert launch(token_client(crew.owner), repo, team=SLUG).status_code == 201
    before = counts()
    for who in (crew.owner, crew.admin, crew.member):
        body = refusal(launch(token_client(who), repo, team=SLUG), "QUOTA_EXCEEDED", "sessions")
        assert (body["used"], body["allowed"], body["left"]) == (3, 3, 0)
        assert "Ocean Lab's limit is 3" in body["detail"], body["detail"]
    assert counts() == before
    row = limit_of(token_client(crew.member).get(TEAM_USAGE).json(), "sessions")
    assert (row["used"], row["allowed"], row["left"]) == (3, 3, 0)
    # personal launches do not count against the team, nor the team's against them
    personal = launch(token_client(crew.member), repo)
    assert personal.status_code == 201, personal.json()
    assert Session.objects.get(pk=personal.json()["id"]).team is None


def test_personal_sessions_do_not_count_against_the_team_nor_team_ones_against_the_user(
    pool_of_three, staff, token_client, new_repo
):
    crew = pool_of_three
    set_limits(token_client(staff), user_quota_url(crew.member), {"sessions": 1})
    running_session(crew.member)  # the member's one personal session
    member = token_client(crew.member)
    repo = new_repo()
    body = refusal(launch(member, repo), "QUOTA_EXCEEDED", "sessions")
    assert "your limit" in body["detail"] and "Ocean Lab" not in body["detail"]
    team_launch = launch(member, repo, team=SLUG)
    assert team_launch.status_code == 201, team_launch.json()
    assert limit_of(member.get(TEAM_USAGE).json(), "sessions")["used"] == 1
    assert limit_of(member.get(MINE).json(), "sessions")["used"] == 1
