"""Setting limits over the API: who may read and set each level, each of the seven limits
set and seen in GET and in ``/usage/``, null and omitted names, invalid bodies, and the
ceilings (staff's for a team, the site's for everyone, the team's pool for a member's cap).

Every refusal is checked for its status, its error code and that no Quota row changed.
"""

from __future__ import annotations

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.quotas.limits import NAMES
from apps.quotas.models import Quota
from apps.quotas.tests.api_support import (
    CEILING,
    GIB,
    MINE,
    MINE_IN_TEAM,
    SLUG,
    TEAM_CSV,
    TEAM_QUOTA,
    TEAM_USAGE,
    VALUES,
    build_minutes,
    limit_of,
    member_quota_url,
    quota_rows,
    running_build,
    running_session,
    session_hours,
    user_quota_url,
)
from apps.sessions.models import Volume

pytestmark = pytest.mark.django_db

ROLES = ("owner", "admin", "member", "outsider", "anonymous")
CODES = {401: "NOT_AUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True)


def expect(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    if status in CODES:
        assert response.json()["error"] == CODES[status]


def url_for(template: str, crew) -> str:
    return template.format(
        member_m=crew.member_m.pk, admin_m=crew.admin_m.pk, owner_m=crew.owner_m.pk,
        member=crew.member.pk, admin=crew.admin.pk,
    )  # fmt: skip


# --- who may read ----------------------------------------------------------------------------

# Expected status for owner, admin, member, outsider, anonymous.
READS = [
    (MINE, (200, 200, 200, 200, 401)),
    (MINE_IN_TEAM, (200, 200, 200, 404, 401)),
    (TEAM_USAGE, (200, 200, 200, 404, 401)),
    (TEAM_USAGE + "?by=member", (200, 200, 403, 404, 401)),
    (TEAM_CSV, (200, 200, 403, 404, 401)),
    (TEAM_QUOTA, (200, 200, 200, 404, 401)),
    # Staff only: anyone else is told there is no such thing, the team's own admins too.
    (CEILING, (404, 404, 404, 404, 401)),
    # A member reads their own cap; only owners and admins read another's.
    (f"/api/v1/teams/{SLUG}/memberships/{{member_m}}/quota/", (200, 200, 200, 404, 401)),
    (f"/api/v1/teams/{SLUG}/memberships/{{admin_m}}/quota/", (200, 200, 403, 404, 401)),
    # A user reads their own limits; another's exist for staff only.
    ("/api/v1/users/{member}/quota/", (404, 404, 200, 404, 401)),
]


@pytest.mark.parametrize(
    ("template", "role", "status"),
    [(t, role, s) for t, statuses in READS for role, s in zip(ROLES, statuses, strict=True)],
)
def test_who_may_read(template, role, status, crew, token_client):
    response = token_client(getattr(crew, role)).get(url_for(template, crew))
    expect(response, status)


@pytest.mark.parametrize(
    "template",
    [CEILING, "/api/v1/users/{member}/quota/", "/api/v1/users/{admin}/quota/"],
)
def test_staff_read_ceilings_and_every_users_limits(template, crew, staff, token_client):
    response = token_client(staff).get(url_for(template, crew))
    expect(response, 200)
    assert set(response.json()) == set(NAMES)


def test_a_membership_of_another_team_is_404_for_an_admin(crew, token_client):
    from apps.teams.models import Membership, Role, Team

    other = Team.objects.create(name="Other", slug="other")
    theirs = Membership.objects.create(team=other, user=UserFactory(), role=Role.MEMBER)
    url = f"/api/v1/teams/{SLUG}/memberships/{theirs.pk}/quota/"
    expect(token_client(crew.admin).get(url), 404)
    expect(token_client(crew.admin).put(url, {"sessions": 1}, format="json"), 404)
    assert quota_rows() == []


# --- who may set -----------------------------------------------------------------------------

PUTS = [
    # (url, body, scope of the row a successful PUT writes, statuses by role)
    (TEAM_QUOTA, {"sessions": 2}, "team", (200, 200, 403, 404, 401)),
    (f"/api/v1/teams/{SLUG}/memberships/{{member_m}}/quota/", {"sessions": 1}, "member",
     (200, 200, 403, 404, 401)),
    (CEILING, {"sessions": 5}, "ceiling", (404, 404, 404, 404, 401)),
    # A member may read their own limits, never set them.
    ("/api/v1/users/{member}/quota/", {"sessions": 5}, "user", (404, 404, 403, 404, 401)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "body", "scope", "role", "status"),
    [(t, b, sc, role, s) for t, b, sc, statuses in PUTS
     for role, s in zip(ROLES, statuses, strict=True)],
)  # fmt: skip
def test_who_may_set_and_a_refused_put_changes_nothing(
    template, body, scope, role, status, crew, token_client
):
    before = quota_rows()
    actor = getattr(crew, role)
    response = token_client(actor).put(url_for(template, crew), body, format="json")
    expect(response, status)
    if status == 200:
        quota = Quota.objects.get(scope=scope)
        assert quota.values == body and quota.updated_by == actor
        assert response.json()["sessions"] == body["sessions"]
    else:
        assert quota_rows() == before == []


@pytest.mark.parametrize("role", ["member", "outsider", "anonymous"])
def test_a_refused_put_leaves_existing_limits_as_they_were(role, crew, token_client, staff):
    for client, url, body in (
        (token_client(crew.owner), TEAM_QUOTA, {"sessions": 2, "memory": GIB}),
        (token_client(crew.admin), member_quota_url(crew.member_m), {"sessions": 1}),
        (token_client(staff), CEILING, {"sessions": 5}),
        (token_client(staff), user_quota_url(crew.member), {"builds": 1}),
    ):
        assert client.put(url, body, format="json").status_code == 200
    before = quota_rows()
    client = token_client(getattr(crew, role))
    for url in (TEAM_QUOTA, member_quota_url(crew.member_m), CEILING,
                user_quota_url(crew.member)):  # fmt: skip
        response = client.put(url, {"sessions": 0, "builds": 50}, format="json")
        assert response.status_code in (401, 403, 404), (url, response.json())
    assert quota_rows() == before and len(before) == 4


def test_staff_set_ceilings_and_users_limits(crew, staff, token_client):
    client = token_client(staff)
    ceiling = client.put(CEILING, {"sessions": 5}, format="json")
    expect(ceiling, 200)
    assert ceiling.json()["sessions"] == 5
    assert client.get(CEILING).json() == ceiling.json()
    limits = client.put(user_quota_url(crew.outsider), {"sessions": 4}, format="json")
    expect(limits, 200)
    assert Quota.objects.get(scope="ceiling", team=crew.team).values == {"sessions": 5}
    assert Quota.objects.get(scope="user", user=crew.outsider).values == {"sessions": 4}
    assert Quota.objects.get(scope="user").updated_by == staff


def test_unknown_user_is_404_for_staff(staff, token_client):
    client = token_client(staff)
    expect(client.get("/api/v1/users/999999/quota/"), 404)
    expect(client.put("/api/v1/users/999999/quota/", {"sessions": 1}, format="json"), 404)
    assert quota_rows() == []


def test_unknown_team_ceiling_is_404_for_staff(staff, token_client):
    client = token_client(staff)
    expect(client.get("/api/v1/teams/nope/ceiling/"), 404)
    expect(client.put("/api/v1/teams/nope/ceiling/", {"sessions": 1}, format="json"), 404)
    assert quota_rows() == []


# --- setting each limit ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_owner_sets_each_team_limit_and_members_see_it(name, crew, token_client):
    value = VALUES[name]
    response = token_client(crew.owner).put(TEAM_QUOTA, {name: value}, format="json")
    expect(response, 200)
    assert response.json()[name] == value
    quota = Quota.objects.get(scope="team", team=crew.team)
    assert quota.values == {name: value} and quota.updated_by == crew.owner
    member = token_client(crew.member)
    assert member.get(TEAM_QUOTA).json() == response.json()
    # nothing is used yet: all of it is left, for the team and for the member within it
    for url in (TEAM_USAGE, MINE_IN_TEAM):
        row = limit_of(member.get(url).json(), name)
        assert (row["allowed"], row["left"]) == (value, value), (url, row)
    # the member's personal limits are not the team's
    assert limit_of(member.get(MINE).json(), name)["allowed"] != value


@pytest.mark.parametrize("name", [name for name in NAMES if name != "storage"])
def test_admin_sets_each_member_cap_and_the_member_sees_it(name, crew, token_client):
    value = VALUES[name]
    url = member_quota_url(crew.member_m)
    response = token_client(crew.admin).put(url, {name: value}, format="json")
    expect(response, 200)
    assert response.json()[name] == value
    assert Quota.objects.get(scope="member", membership=crew.member_m).values == {name: value}
    member = token_client(crew.member)
    assert member.get(url).json() == response.json()
    row = limit_of(member.get(MINE_IN_TEAM).json(), name)
    assert (row["allowed"], row["left"]) == (value, value)
    # the cap is the member's: the admin's own use within the team is not bounded by it
    admin_row = limit_of(token_client(crew.admin).get(MINE_IN_TEAM).json(), name)
    assert admin_row["allowed"] != value
    assert not Quota.objects.filter(scope="team").exists()


@pytest.mark.parametrize("name", NAMES)
def test_staff_set_each_user_limit_and_the_user_sees_it(name, crew, staff, token_client):
    value = VALUES[name]
    url = user_quota_url(crew.outsider)
    response = token_client(staff).put(url, {name: value}, format="json")
    expect(response, 200)
    assert response.json()[name] == value
    assert Quota.objects.get(scope="user", user=crew.outsider).values == {name: value}
    mine = token_client(crew.outsider)
    assert mine.get(url).json() == response.json()
    row = limit_of(mine.get(MINE).json(), name)
    assert (row["allowed"], row["left"]) == (value, value)


def test_usage_shows_what_is_left_of_each_limit(crew, staff, token_client):
    user = crew.outsider
    token_client(staff).put(user_quota_url(user), VALUES, format="json")
    running_session(user, cpu=1.0, memory_bytes=GIB // 2)
    running_build(user)
    session_hours(10, user=user)
    build_minutes(30, user=user)
    Volume.objects.create(user=user, size_bytes=4 * GIB)
    body = token_client(user).get(MINE).json()
    assert set(body) == {"period", "limits"}
    assert set(body["period"]) >= {"start", "end"}
    assert [row["name"] for row in body["limits"]] == list(NAMES)
    got = {row["name"]: (row["unit"], row["used"], row["allowed"], row["left"])
           for row in body["limits"]}  # fmt: skip
    assert got == {
        "sessions": ("sessions", 1, 2, 1),
        "cpu": ("cores", 1.0, 1.5, 1.5),  # per session: what one more session may have
        "memory": ("bytes", GIB // 2, GIB, GIB),
        "session_hours": ("hours", 10.0, 40, 30.0),
        "build_minutes": ("minutes", 30.0, 120, 90.0),
        "storage": ("bytes", 4 * GIB, 10 * GIB, 6 * GIB),
        "builds": ("builds", 1, 2, 1),
    }


def test_put_all_seven_at_once_answers_the_effective_limits(crew, token_client):
    response = token_client(crew.owner).put(TEAM_QUOTA, VALUES, format="json")
    expect(response, 200)
    assert response.json() == VALUES
    assert Quota.objects.get(scope="team", team=crew.team).values == VALUES


def test_null_is_unlimited_and_an_omitted_name_is_unchanged(crew, token_client):
    owner = token_client(crew.owner)
    owner.put(TEAM_QUOTA, {"sessions": 2, "build_minutes": 120}, format="json")
    response = owner.put(TEAM_QUOTA, {"build_minutes": None}, format="json")
    expect(response, 200)
    assert (response.json()["sessions"], response.json()["build_minutes"]) == (2, None)
    quota = Quota.objects.get(scope="team", team=crew.team)
    assert quota.values == {"sessions": 2, "build_minutes": None}
    row = limit_of(owner.get(TEAM_USAGE).json(), "build_minutes")
    assert (row["allowed"], row["left"]) == (None, None)
    assert limit_of(owner.get(TEAM_USAGE).json(), "sessions")["allowed"] == 2


def test_an_empty_put_changes_nothing_and_answers_the_limits(crew, token_client):
    owner = token_client(crew.owner)
    first = owner.put(TEAM_QUOTA, {"sessions": 2}, format="json").json()
    response = owner.put(TEAM_QUOTA, {}, format="json")
    expect(response, 200)
    assert response.json() == first
    assert Quota.objects.get(scope="team", team=crew.team).values == {"sessions": 2}


def test_storage_is_a_volumes_limit_not_a_members(crew, token_client):
    response = token_client(crew.admin).put(member_quota_url(crew.member_m),
                                            {"storage": 10 * GIB}, format="json")  # fmt: skip
    assert response.status_code == 400
    assert (response.json()["error"], response.json()["limit"]) == ("QUOTA_INVALID", "storage")
    assert not Quota.objects.filter(scope="member").exists()


# --- invalid bodies --------------------------------------------------------------------------

INVALID = [
    ({"bogus": 1}, "bogus"),
    ({"sessions": -1}, "sessions"),
    ({"memory": "2G"}, "memory"),
    ({"sessions": 1.5}, "sessions"),
    ({"builds": True}, "builds"),
    ({"cpu": 0}, "cpu"),  # below the least a session may have
    ({"storage": 2.5}, "storage"),
    ({"session_hours": "40"}, "session_hours"),
    ({"sessions": 2, "cpu": "fast"}, "cpu"),  # a good name beside a bad one: neither saved
]


@pytest.fixture
def setter(crew, staff, token_client):
    """(client, url, scope) for each level's PUT, by who may make it."""
    return {
        "team": (token_client(crew.owner), TEAM_QUOTA, "team"),
        "member": (token_client(crew.admin), member_quota_url(crew.member_m), "member"),
        "ceiling": (token_client(staff), CEILING, "ceiling"),
        "user": (token_client(staff), user_quota_url(crew.member), "user"),
    }


@pytest.mark.parametrize("level", ["team", "member", "ceiling", "user"])
@pytest.mark.parametrize(("body", "name"), INVALID)
def test_an_invalid_body_is_400_naming_the_limit_and_saves_nothing(level, body, name, setter):
    client, url, scope = setter[level]
    assert client.put(url, {"builds": 1}, format="json").status_code == 200
    before = quota_rows()
    response = client.put(url, body, format="json")
    assert response.status_code == 400, response.json()
    assert (response.json()["error"], response.json()["limit"]) == ("QUOTA_INVALID", name)
    assert name in response.json()["detail"]
    assert quota_rows() == before
    assert Quota.objects.get(scope=scope).values == {"builds": 1}


@pytest.mark.parametrize("level", ["team", "member", "ceiling", "user"])
def test_a_body_that_is_not_an_object_is_400(level, setter):
    client, url, _ = setter[level]
    response = client.put(url, [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "QUOTA_INVALID"
    assert quota_rows() == []


# --- the ceilings ----------------------------------------------------------------------------


def test_admins_cannot_set_the_team_above_the_ceiling_staff_set(crew, staff, token_client):
    expect(token_client(staff).put(CEILING, {"sessions": 5}, format="json"), 200)
    admin = token_client(crew.admin)
    above = admin.put(TEAM_QUOTA, {"sessions": 6}, format="json")
    assert above.status_code == 400
    body = above.json()
    assert (body["error"], body["limit"], body["allowed"]) == ("QUOTA_ABOVE_CEILING", "sessions", 5)
    assert not Quota.objects.filter(scope="team").exists()
    # at the ceiling is fine; unlimited is above any ceiling
    expect(admin.put(TEAM_QUOTA, {"sessions": 5}, format="json"), 200)
    unlimited = admin.put(TEAM_QUOTA, {"sessions": None}, format="json")
    assert unlimited.status_code == 400
    assert (unlimited.json()["error"], unlimited.json()["limit"]) == (
        "QUOTA_ABOVE_CEILING", "sessions")  # fmt: skip
    assert Quota.objects.get(scope="team", team=crew.team).values == {"sessions": 5}
    # one name above the ceiling refuses the whole body
    before = quota_rows()
    mixed = admin.put(TEAM_QUOTA, {"memory": GIB, "sessions": 7}, format="json")
    assert mixed.status_code == 400 and mixed.json()["error"] == "QUOTA_ABOVE_CEILING"
    assert quota_rows() == before


def test_a_ceiling_lowered_under_the_pool_binds_the_pool(crew, staff, token_client):
    expect(token_client(crew.owner).put(TEAM_QUOTA, {"sessions": 8}, format="json"), 200)
    expect(token_client(staff).put(CEILING, {"sessions": 5}, format="json"), 200)
    assert token_client(crew.member).get(TEAM_QUOTA).json()["sessions"] == 5
    row = limit_of(token_client(crew.member).get(TEAM_USAGE).json(), "sessions")
    assert row["allowed"] == 5
    assert Quota.objects.get(scope="team").values == {"sessions": 8}  # kept, bound


def test_the_site_ceiling_bounds_a_staff_set_user_limit(crew, staff, token_client, settings):
    settings.BINDERY_QUOTA_CEILINGS = '{"memory": 4294967296}'
    client = token_client(staff)
    above = client.put(user_quota_url(crew.member), {"memory": 8 * GIB}, format="json")
    assert above.status_code == 400
    body = above.json()
    assert (body["error"], body["limit"], body["allowed"]) == (
        "QUOTA_ABOVE_CEILING", "memory", 4 * GIB)  # fmt: skip
    unlimited = client.put(user_quota_url(crew.member), {"memory": None}, format="json")
    assert unlimited.status_code == 400 and unlimited.json()["limit"] == "memory"
    assert quota_rows() == []
    at_ceiling = client.put(user_quota_url(crew.member), {"memory": 4 * GIB}, format="json")
    expect(at_ceiling, 200)
    assert at_ceiling.json()["memory"] == 4 * GIB


def test_the_site_ceiling_bounds_staff_team_ceilings_and_admins(crew, staff, token_client,
                                                                settings):  # fmt: skip
    settings.BINDERY_QUOTA_CEILINGS = '{"memory": 4294967296}'
    ceiling = token_client(staff).put(CEILING, {"memory": 8 * GIB}, format="json")
    assert ceiling.status_code == 400 and ceiling.json()["error"] == "QUOTA_ABOVE_CEILING"
    pool = token_client(crew.owner).put(TEAM_QUOTA, {"memory": 8 * GIB}, format="json")
    assert pool.status_code == 400
    assert (pool.json()["error"], pool.json()["allowed"]) == ("QUOTA_ABOVE_CEILING", 4 * GIB)
    assert quota_rows() == []
    # what staff see as the team's ceiling is the site's where they set none
    assert token_client(staff).get(CEILING).json()["memory"] == 4 * GIB


def test_a_member_cap_cannot_exceed_the_teams_pool(crew, token_client):
    admin = token_client(crew.admin)
    expect(admin.put(TEAM_QUOTA, {"sessions": 3}, format="json"), 200)
    url = member_quota_url(crew.member_m)
    above = admin.put(url, {"sessions": 4}, format="json")
    assert above.status_code == 400
    body = above.json()
    assert (body["error"], body["limit"], body["allowed"]) == ("QUOTA_ABOVE_CEILING", "sessions", 3)
    unlimited = admin.put(url, {"sessions": None}, format="json")
    assert unlimited.status_code == 400 and unlimited.json()["limit"] == "sessions"
    assert not Quota.objects.filter(scope="member").exists()
    expect(admin.put(url, {"sessions": 3}, format="json"), 200)
    assert Quota.objects.get(scope="member", membership=crew.member_m).values == {"sessions": 3}
