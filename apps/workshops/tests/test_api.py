"""The workshops API: the instructor's endpoints (create, list, detail, update, close,
rotate, the roster and its actions) for the owner, a team's admins, outsiders (404) and the
anonymous (401); and joining by code, as guests and as users. Real database rows, real git
repositories over HTTP and real API tokens; no worker runs, so joins are asserted as rows
(a seat, a session launching, its launch queued)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas.models import Quota
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.models import Session
from apps.workshops import services
from apps.workshops.models import CODE_ALPHABET, Seat, Workshop
from portal import crypto

pytestmark = pytest.mark.django_db

API = "/api/v1/workshops/"
JOIN = "/api/v1/workshops/join/"
STATUS = "/api/v1/workshops/join/status/"


@pytest.fixture
def repo(git_host: Any) -> Any:
    return git_host.create_repo(f"org/wapi-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def instructor(**extra: Any) -> Any:
    user: Any = UserFactory(**extra)
    Quota.objects.create(scope="user", user=user, values={"sessions": 60})
    return user


def iso(when: datetime) -> str:
    return when.isoformat()


def body(repo: Any, **overrides: Any) -> dict[str, Any]:
    now = timezone.now()
    data = {
        "title": "Intro to pandas",
        "repo_url": repo.url,
        "ref": "main",
        "opens_at": iso(now - timedelta(minutes=1)),
        "closes_at": iso(now + timedelta(hours=2)),
        "seats": 3,
        "guests": True,
    }
    data.update(overrides)
    return data


def workshop(owner: Any, repo: Any, *, seats: int = 3, opens_in: timedelta = timedelta(minutes=-1),
             hours: float = 2, ready: bool = True, **extra: Any) -> Workshop:  # fmt: skip
    now = timezone.now()
    extra.setdefault("guests", True)
    w = services.create_workshop(
        owner, title="Intro", repo_url=repo.url, opens_at=now + opens_in,
        closes_at=now + opens_in + timedelta(hours=hours), seats=seats, **extra,
    )  # fmt: skip
    if ready:
        assert w.build_id is not None
        Build.objects.filter(pk=w.build_id).update(status="ready", result={})
    return Workshop.objects.select_related("build").get(code=w.code)


def join(client: APIClient, code: str, name: str = "Ada", **extra: Any) -> Any:
    return client.post(JOIN, {"code": code, "name": name, **extra}, format="json")


# --- creating -------------------------------------------------------------------------------


def test_create_returns_the_workshop_pinned_and_building(token_client, repo):
    owner = instructor()
    response = token_client(owner).post(
        API, body(repo, time_zone="Europe/Berlin", memory=512 * 1024**2, session_minutes=45,
                  email_domains="Uni.EDU, @lab.org", mount_volumes=False),
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    data = response.json()
    w = Workshop.objects.get(pk=data["id"])
    assert len(data["code"]) == 6 and set(data["code"]) <= set(CODE_ALPHABET)
    assert data["code"] == w.code
    assert data["join_url"] == f"{settings.SITE_URL}/w/{w.code}"
    assert data["status"] == "building"
    assert data["build"] == {
        "id": w.build_id, "status": "pending", "phase": "waiting", "error_message": "",
        "url": f"/api/v1/builds/{w.build_id}/",
    }  # fmt: skip
    assert (data["seats"], data["seats_taken"], data["warm"]) == (3, 0, {"ready": 0, "starting": 0})
    assert data["resolved_ref"] == repo.head and w.resolved_ref == repo.head  # pinned
    assert (data["team"], data["time_zone"], data["session_minutes"]) == (None, "Europe/Berlin", 45)
    assert (data["memory"], data["guests"]) == (512 * 1024**2, True)
    assert data["email_domains"] == "uni.edu, lab.org"
    assert data["links"] == {"self": f"/api/v1/workshops/{w.pk}/",
                             "roster": f"/api/v1/workshops/{w.pk}/roster/",
                             "page": f"/workshops/{w.pk}/"}  # fmt: skip
    assert w.owner == owner and w.memory_bytes == 512 * 1024**2
    assert data["display_name"] and data["repo_url"] == repo.url and data["ref"] == "main"


def test_seats_above_the_quota_return_429_and_nothing_is_made(token_client, repo):
    response = token_client(instructor()).post(API, body(repo, seats=61), format="json")
    assert response.status_code == 429
    assert response.json()["error"] == "QUOTA_EXCEEDED"
    assert response.json()["limit"] == "sessions"
    assert not Workshop.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"closes_at": "2030-01-01T09:00:00+00:00", "opens_at": "2030-01-01T10:00:00+00:00"},
         "closes_at"),
        ({"opens_at": "2030-01-01T09:00:00"}, "opens_at"),  # no offset
        ({"opens_at": "tomorrow"}, "opens_at"),
        ({"opens_at": "2020-01-01T09:00:00Z", "closes_at": "2020-01-01T10:00:00Z"}, "closes_at"),
        ({"seats": 0}, "seats"),
        ({"title": "  "}, "title"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"spec": "gh/org/repo/main"}, "non_field_errors"),  # both spec and repo_url
    ],
)  # fmt: skip
def test_bad_input_returns_400_naming_the_field(token_client, repo, change, field):
    response = token_client(instructor()).post(API, body(repo, **change), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert field in response.json()["fields"]
    assert not Workshop.objects.exists()


def test_a_team_admin_creates_the_teams_workshop_a_member_may_not(token_client, crew, repo):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 60})
    made = token_client(crew.admin).post(API, body(repo, team="ocean-lab"), format="json")
    assert made.status_code == 201, made.json()
    assert made.json()["team"] == "ocean-lab"
    refused = token_client(crew.member).post(API, body(repo, team="ocean-lab"), format="json")
    assert (refused.status_code, refused.json()["error"]) == (403, "PERMISSION_DENIED")
    outsider = token_client(crew.outsider).post(API, body(repo, team="ocean-lab"), format="json")
    assert (outsider.status_code, outsider.json()["error"]) == (404, "NOT_FOUND")
    assert Workshop.objects.count() == 1
    # the team's owner, who did not create it, runs it too
    listed = token_client(crew.owner).get(API).json()["results"]
    assert [w["id"] for w in listed] == [made.json()["id"]]
    assert token_client(crew.member).get(API).json()["results"] == []


# --- the instructor's endpoints: owner, outsider, anonymous --------------------------------


def _endpoints(w: Workshop, seat: Seat) -> list[tuple[str, str]]:
    base = f"{API}{w.pk}/"
    return [
        ("get", base), ("patch", base), ("post", base + "close/"),
        ("post", base + "rotate-code/"), ("post", base + "update-environment/"),
        ("post", base + "stop-all/"), ("get", base + "roster/"),
        ("post", f"{base}roster/{seat.pk}/stop/"), ("post", f"{base}roster/{seat.pk}/restart/"),
    ]  # fmt: skip


def test_outsider_gets_404_and_changes_nothing(token_client, crew, repo):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 60})
    w = workshop(crew.admin, repo, team=crew.team)
    seat = services.join(w.code, name="Guest").seat
    before = Workshop.objects.values().get(pk=w.pk)
    for person in (crew.outsider, crew.member):
        client = token_client(person)
        for method, url in _endpoints(w, seat):
            response = getattr(client, method)(url, {"title": "Mine"}, format="json")
            assert response.status_code == 404, (person, method, url)
            assert response.json()["error"] == "NOT_FOUND"
        assert client.get(API).json()["count"] == 0
    assert Workshop.objects.values().get(pk=w.pk) == before
    assert Seat.objects.get(pk=seat.pk).session.status == "launching"


def test_anonymous_gets_401(token_client, repo):
    w = workshop(instructor(), repo)
    seat = services.join(w.code, name="Guest").seat
    anonymous = token_client(None)
    for method, url in [("get", API), ("post", API), *_endpoints(w, seat)]:
        response = getattr(anonymous, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        assert response.json()["error"] == "NOT_AUTHENTICATED"


def test_list_is_mine_newest_first_in_a_constant_number_of_queries(token_client, repo):
    owner = instructor()
    client = token_client(owner)
    workshop(instructor(), repo)  # someone else's
    mine = [workshop(owner, repo, opens_in=timedelta(hours=1)).pk]

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(API)
        assert response.status_code == 200
        return len(queries)

    count()  # the token's first use is recorded once: not part of the list
    few = count()
    for day in range(1, 6):
        mine.append(workshop(owner, repo, opens_in=timedelta(days=day), seats=2).pk)
    busy = workshop(owner, repo, seats=4)  # open now, two seats taken
    mine.append(busy.pk)
    services.join(busy.code, name="Guest")
    services.join(busy.code, name="Guest 2")
    assert count() == few
    results = client.get(API).json()["results"]
    assert {r["id"] for r in results} == set(mine)
    opening = [r["opens_at"] for r in results]
    assert opening == sorted(opening, reverse=True)
    assert {r["id"]: r["seats_taken"] for r in results if r["seats_taken"]} == {busy.pk: 2}


def test_patch_changes_what_is_sent_within_the_quota(token_client, repo):
    owner = instructor()
    w = workshop(owner, repo, seats=3)
    services.join(w.code, name="One")
    services.join(w.code, name="Two")
    client = token_client(owner)
    closes = timezone.now() + timedelta(hours=5)
    response = client.patch(f"{API}{w.pk}/", {"title": "Pandas II", "seats": 10,
                                               "closes_at": iso(closes), "guests": False},
                            format="json")  # fmt: skip
    assert response.status_code == 200, response.json()
    data = response.json()
    assert (data["title"], data["seats"], data["seats_taken"], data["guests"]) == (
        "Pandas II", 10, 2, False)  # fmt: skip
    w.refresh_from_db()
    assert w.closes_at == closes and w.session_minutes == 120  # untouched
    fewer = client.patch(f"{API}{w.pk}/", {"seats": 1}, format="json")
    assert (fewer.status_code, fewer.json()["fields"].keys()) == (400, {"seats"})
    # more seats than the instructor's 60 sessions: refused as at creation
    more = client.patch(f"{API}{w.pk}/", {"seats": 61}, format="json")
    assert (more.status_code, more.json()["error"]) == (429, "QUOTA_EXCEEDED")
    assert Workshop.objects.get(pk=w.pk).seats == 10


def test_close_stops_seated_sessions_and_joining_then_answers_410(token_client, repo):
    owner = instructor()
    w = workshop(owner, repo)
    joined = services.join(w.code, name="Guest")
    response = token_client(owner).post(f"{API}{w.pk}/close/")
    assert response.status_code == 200
    assert response.json()["status"] == "closed" and response.json()["closed_at"]
    assert Session.objects.get(pk=joined.session.pk).status == "stopping"
    late = join(token_client(None), w.code, "Late")
    assert (late.status_code, late.json()["error"]) == (410, "WORKSHOP_CLOSED")
    again = token_client(owner).patch(f"{API}{w.pk}/", {"title": "x"}, format="json")
    assert (again.status_code, again.json()["error"]) == (410, "WORKSHOP_CLOSED")


def test_rotating_the_code_retires_the_old_one_and_keeps_seats(token_client, repo):
    owner = instructor()
    w = workshop(owner, repo)
    guest = token_client(None)
    first = join(guest, w.code, "Ada").json()
    response = token_client(owner).post(f"{API}{w.pk}/rotate-code/")
    assert response.status_code == 200
    new = response.json()["code"]
    assert new != w.code and response.json()["join_url"].endswith(f"/w/{new}")
    old = join(guest, w.code, "Bob")
    assert (old.status_code, old.json()["error"]) == (404, "WORKSHOP_NOT_FOUND")
    again = join(guest, new, "Ada", guest_token=first["guest_token"])
    assert again.status_code == 200
    assert again.json()["seat"] == first["seat"]
    assert again.json()["session"]["id"] == first["session"]["id"]


def test_update_environment_pins_the_new_commit_and_builds_it(token_client, git_host, repo):
    owner = instructor()
    w = workshop(owner, repo)
    sha = git_host.commit(repo, {"requirements.txt": "tabulate\n"})
    response = token_client(owner).post(f"{API}{w.pk}/update-environment/")
    assert response.status_code == 202, response.json()
    data = response.json()
    assert data["resolved_ref"] == sha != w.resolved_ref
    assert data["build"]["id"] != w.build_id and data["build"]["status"] == "pending"
    assert data["status"] == "building"


# --- the roster -----------------------------------------------------------------------------


def test_roster_lists_attendees_in_a_constant_number_of_queries(token_client, repo):
    owner = instructor()
    w = workshop(owner, repo, seats=25, guests=True)
    attendee = UserFactory(first_name="Grace", last_name="Hopper")
    services.join(w.code, user=attendee)
    services.join(w.code, name="Ada")
    services.join(w.code, name="Linus")
    client = token_client(owner)
    url = f"{API}{w.pk}/roster/"

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        return len(queries)

    count()  # the token's first use is recorded once: not part of the list
    few = count()
    rows = client.get(url).json()["results"]
    assert [r["name"] for r in rows] == ["Grace Hopper", "Ada", "Linus"]
    first = rows[0]
    seat = Seat.objects.get(user=attendee)
    assert first == {
        "seat": seat.pk, "name": "Grace Hopper", "guest": False,
        "user": {"id": attendee.pk, "username": attendee.username, "email": attendee.email,
                 "name": "Grace Hopper"},
        "session": seat.session_id, "status": "launching",
        "joined_at": first["joined_at"], "ends_at": first["ends_at"], "last_activity": None,
        "memory_used": None, "memory_bytes": seat.session.memory_bytes,
    }  # fmt: skip
    assert rows[1]["guest"] is True and rows[1]["user"] is None
    for n in range(17):
        services.join(w.code, name=f"Guest {n}")
    Session.objects.filter(pk=seat.session_id).update(status="ready",
                                                      last_activity=timezone.now())  # fmt: skip
    Seat.objects.filter(name="Guest 0").update(session=None)
    assert count() == few
    rows = client.get(url).json()["results"]
    assert len(rows) == 20
    assert rows[0]["status"] == "ready" and rows[0]["last_activity"]
    assert next(r for r in rows if r["name"] == "Guest 0")["status"] == "left"


def test_the_instructor_stops_restarts_and_stops_all(token_client, repo):
    owner = instructor()
    w = workshop(owner, repo)
    one, two = services.join(w.code, name="One"), services.join(w.code, name="Two")
    client = token_client(owner)
    stopped = client.post(f"{API}{w.pk}/roster/{one.seat.pk}/stop/")
    assert stopped.status_code == 200
    assert (stopped.json()["seat"], stopped.json()["status"]) == (one.seat.pk, "stopping")
    restarted = client.post(f"{API}{w.pk}/roster/{one.seat.pk}/restart/")
    assert restarted.status_code == 200
    fresh = restarted.json()["session"]
    assert fresh != one.session.pk and restarted.json()["status"] == "launching"
    assert Seat.objects.get(pk=one.seat.pk).session_id == fresh
    assert client.post(f"{API}{w.pk}/roster/999999/stop/").status_code == 404
    everyone = client.post(f"{API}{w.pk}/stop-all/")
    assert everyone.json() == {"stopped": 2}
    assert set(Session.objects.filter(pk__in=[fresh, two.session.pk])
               .values_list("status", flat=True)) == {"stopping"}  # fmt: skip
    assert Seat.objects.filter(workshop=w).count() == 2


# --- joining --------------------------------------------------------------------------------


def test_a_guest_joins_with_a_name_and_gets_what_opens_the_session(token_client, repo):
    w = workshop(instructor(), repo, seats=2)
    guest = token_client(None)
    response = join(guest, w.code.lower()[:3] + "-" + w.code.lower()[3:], "  Ada  Lovelace ")
    assert response.status_code == 201, response.json()
    data = response.json()
    seat = Seat.objects.get(workshop=w)
    session = seat.session
    assert session is not None and session.status == "launching"
    assert (session.user, session.workshop_id) == (None, w.pk)
    assert data["seat"] == {"id": seat.pk, "name": "Ada Lovelace"}
    assert data["guest_token"] and seat.guest_digest == services.guest_digest(data["guest_token"])
    assert session.anonymous_owner == data["guest_token"]
    assert data["warm"] is False and data["open_url"] is None
    assert 0 < data["time_left"] <= 120 * 60
    assert data["workshop"]["code"] == w.code
    assert data["status_url"] == f"{settings.SITE_URL}{STATUS}?code={w.code}"
    # the session exactly as /api/v1/sessions/{id}/ shows it (a guest has no account to ask)
    assert data["session"] == json.loads(json.dumps(SessionSerializer(session).data))
    # the status poll answers the same for the token, and 404 for anyone else
    polled = guest.get(STATUS, {"code": w.code, "guest_token": data["guest_token"]})
    assert polled.status_code == 200
    assert polled.json()["session"]["id"] == session.pk
    assert polled.json()["seat"] == data["seat"]
    posted = guest.post(STATUS, {"code": w.code, "guest_token": data["guest_token"]},
                        format="json")  # fmt: skip
    assert posted.json()["session"]["id"] == session.pk
    for params in ({"code": w.code, "guest_token": "f" * 32}, {"code": "AAAAAA",
                   "guest_token": data["guest_token"]}, {"code": w.code}):  # fmt: skip
        refused = guest.get(STATUS, params)
        assert (refused.status_code, refused.json()["error"]) == (404, "WORKSHOP_SEAT_NOT_FOUND")


def test_open_url_carries_the_token_once_the_server_is_ready(token_client, repo):
    w = workshop(instructor(), repo)
    data = join(token_client(None), w.code).json()
    Session.objects.filter(pk=data["session"]["id"]).update(
        status="ready", url="http://127.0.0.1:9/user/anon-x/s1/lab",
        token_encrypted=crypto.encrypt("s3cret"), ready_at=timezone.now(),
    )  # fmt: skip
    polled = token_client(None).get(STATUS, {"code": w.code, "guest_token": data["guest_token"]})
    assert polled.json()["open_url"] == "http://127.0.0.1:9/user/anon-x/s1/lab?token=s3cret"
    assert polled.json()["session"]["status"] == "ready"


def test_unknown_code_is_404(token_client, repo):
    workshop(instructor(), repo)
    response = join(token_client(None), "XXXXXX")
    assert (response.status_code, response.json()["error"]) == (404, "WORKSHOP_NOT_FOUND")


def test_before_opening_is_409_with_the_opening_time(token_client, repo):
    w = workshop(instructor(), repo, opens_in=timedelta(hours=3))
    response = join(token_client(None), w.code)
    assert (response.status_code, response.json()["error"]) == (409, "WORKSHOP_NOT_OPEN")
    assert datetime.fromisoformat(response.json()["opens_at"]) == w.opens_at
    assert not Seat.objects.exists()


def test_while_the_environment_builds_it_is_not_open(token_client, repo):
    w = workshop(instructor(), repo, ready=False)
    response = join(token_client(None), w.code)
    assert (response.status_code, response.json()["error"]) == (409, "WORKSHOP_NOT_OPEN")


def test_after_closing_is_410(token_client, repo):
    w = workshop(instructor(), repo)
    now = timezone.now()
    Workshop.objects.filter(pk=w.pk).update(opens_at=now - timedelta(hours=2),
                                            closes_at=now - timedelta(minutes=1))  # fmt: skip
    response = join(token_client(None), w.code)
    assert (response.status_code, response.json()["error"]) == (410, "WORKSHOP_CLOSED")


def test_full_is_409_and_a_seated_guest_still_gets_back_in(token_client, repo):
    w = workshop(instructor(), repo, seats=2)
    first = join(token_client(None), w.code, "One").json()
    join(token_client(None), w.code, "Two")
    response = join(token_client(None), w.code, "Three")
    assert (response.status_code, response.json()["error"]) == (409, "WORKSHOP_FULL")
    assert response.json()["seats"] == 2
    back = join(token_client(None), w.code, "One", guest_token=first["guest_token"])
    assert back.status_code == 200 and back.json()["seat"] == first["seat"]
    assert Seat.objects.filter(workshop=w).count() == 2


def test_a_guest_without_a_name_is_400(token_client, repo):
    w = workshop(instructor(), repo)
    for name in ("", "   ", "x" * 101):
        response = join(token_client(None), w.code, name)
        assert response.status_code == 400, name
        assert response.json()["error"] == "VALIDATION_ERROR"
        assert "name" in response.json()["fields"]
    missing = token_client(None).post(JOIN, {"name": "Ada"}, format="json")
    assert (missing.status_code, list(missing.json()["fields"])) == (400, ["code"])
    assert not Seat.objects.exists()


def test_a_guest_rejoining_with_their_token_gets_the_same_seat_and_session(token_client, repo):
    w = workshop(instructor(), repo)
    first = join(token_client(None), w.code, "Ada").json()
    again = join(token_client(None), w.code, "Ada L.", guest_token=first["guest_token"])
    assert again.status_code == 200
    assert again.json()["seat"] == first["seat"]
    assert again.json()["session"]["id"] == first["session"]["id"]
    assert again.json()["guest_token"] == first["guest_token"]
    assert Seat.objects.count() == 1 and Session.objects.count() == 1


def test_a_guest_cannot_reach_another_guests_seat(token_client, repo):
    w = workshop(instructor(), repo, seats=5)
    ada = join(token_client(None), w.code, "Ada").json()
    ada_session = Session.objects.get(pk=ada["session"]["id"])
    # a made-up token, and one sharing the start of Ada's (from which hub users are named)
    for made_up in ("0" * 32, ada["guest_token"][:16] + "0" * 16, "short"):
        response = join(token_client(None), w.code, "Mallory", guest_token=made_up)
        assert response.status_code == 201, response.json()
        data = response.json()
        assert data["seat"]["id"] != ada["seat"]["id"]
        assert data["session"]["id"] != ada_session.pk
        assert data["guest_token"] not in (made_up, ada["guest_token"])  # drawn by the server
        theirs = Session.objects.get(pk=data["session"]["id"])
        assert theirs.hub_user != ada_session.hub_user
        assert theirs.anonymous_owner == data["guest_token"]
    assert Seat.objects.get(pk=ada["seat"]["id"]).session_id == ada_session.pk
    assert Seat.objects.filter(workshop=w).count() == 4


def test_signed_in_attendees_join_as_themselves_when_guests_are_off(token_client, repo):
    w = workshop(instructor(), repo, guests=False)
    anonymous = join(token_client(None), w.code)
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "WORKSHOP_SIGN_IN_REQUIRED")
    attendee = UserFactory(first_name="Grace", last_name="Hopper")
    client = token_client(attendee)
    response = client.post(JOIN, {"code": w.code}, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    seat = Seat.objects.get(workshop=w)
    assert (seat.user, seat.name, seat.session.user) == (attendee, "Grace Hopper", attendee)
    assert data["guest_token"] is None
    sid = data["session"]["id"]
    assert data["status_url"] == f"{settings.SITE_URL}/api/v1/sessions/{sid}/"
    assert client.get(f"/api/v1/sessions/{sid}/").json() == data["session"]
    # a token sent by a signed-in caller is ignored: they are who they are
    again = client.post(JOIN, {"code": w.code, "guest_token": "0" * 32}, format="json")
    assert again.status_code == 200 and again.json()["session"]["id"] == sid
    assert client.get(STATUS, {"code": w.code}).json()["session"]["id"] == sid


def test_email_domains_and_team_membership_are_403_for_others(token_client, crew, repo):
    w = workshop(instructor(), repo, guests=False, email_domains="uni.edu")
    outside = token_client(UserFactory(email="ada@example.org"))
    response = outside.post(JOIN, {"code": w.code}, format="json")
    assert (response.status_code, response.json()["error"]) == (403, "WORKSHOP_NOT_ALLOWED")
    inside = token_client(UserFactory(email="ada@UNI.edu")).post(JOIN, {"code": w.code},
                                                                 format="json")  # fmt: skip
    assert inside.status_code == 201
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 60})
    members = workshop(crew.admin, repo, guests=False, team=crew.team, team_members_only=True)
    refused = token_client(crew.outsider).post(JOIN, {"code": members.code}, format="json")
    assert (refused.status_code, refused.json()["error"]) == (403, "WORKSHOP_NOT_ALLOWED")
    seated = token_client(crew.member).post(JOIN, {"code": members.code}, format="json")
    assert seated.status_code == 201


def test_a_join_is_handed_a_warm_server(token_client, repo, settings):
    settings.BINDERY_WORKSHOP_WARM_STARTS = 10
    w = workshop(instructor(), repo, seats=3)
    assert services.fill_warm_pools() == {w.pk: 3}
    warm = Session.objects.filter(workshop=w, seat__isnull=True)
    warm.update(status="ready", ready_at=timezone.now(), url="http://127.0.0.1:9/user/w/x/",
                token_encrypted=crypto.encrypt("tok"))  # fmt: skip
    pool = set(warm.values_list("pk", flat=True))
    detail = token_client(w.owner).get(f"{API}{w.pk}/").json()
    assert detail["warm"] == {"ready": 3, "starting": 0}
    response = join(token_client(None), w.code, "Ada")
    assert response.status_code == 201
    data = response.json()
    assert data["warm"] is True and data["session"]["id"] in pool
    assert data["open_url"] == "http://127.0.0.1:9/user/w/x/?token=tok"
    session = Session.objects.get(pk=data["session"]["id"])
    assert session.anonymous_owner == data["guest_token"] and session.seat.name == "Ada"
    user = UserFactory()
    mine = token_client(user).post(JOIN, {"code": w.code}, format="json").json()
    assert mine["warm"] is True and mine["session"]["id"] in pool - {session.pk}
    assert Session.objects.get(pk=mine["session"]["id"]).user == user
    # polling (and rejoining) still tells the guest it is a warm server
    polled = token_client(None).get(STATUS, {"code": w.code, "guest_token": data["guest_token"]})
    assert polled.json()["warm"] is True
    assert token_client(w.owner).get(f"{API}{w.pk}/").json()["warm"]["ready"] == 1


def test_joins_are_throttled_per_client_address(repo, settings):
    settings.BINDERY_WORKSHOP_JOIN_RATE = "3/min"
    w = workshop(instructor(), repo, seats=10)
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    client = APIClient(REMOTE_ADDR=address)
    assert join(client, "XXXXXX").status_code == 404
    assert join(client, w.code, "One").status_code == 201
    assert join(client, w.code, "Two").status_code == 201
    # a forged X-Forwarded-For does not make another client of it
    throttled = client.post(JOIN, {"code": w.code, "name": "Three"}, format="json",
                            HTTP_X_FORWARDED_FOR="192.0.2.7")  # fmt: skip
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "THROTTLED" and throttled.json()["retry_after"] > 0
    assert Seat.objects.filter(workshop=w).count() == 2


def test_every_endpoint_is_in_the_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in [
        "/api/v1/workshops/", "/api/v1/workshops/{workshop_id}/",
        "/api/v1/workshops/{workshop_id}/close/", "/api/v1/workshops/{workshop_id}/rotate-code/",
        "/api/v1/workshops/{workshop_id}/update-environment/",
        "/api/v1/workshops/{workshop_id}/stop-all/", "/api/v1/workshops/{workshop_id}/roster/",
        "/api/v1/workshops/{workshop_id}/roster/{seat_id}/stop/",
        "/api/v1/workshops/{workshop_id}/roster/{seat_id}/restart/",
        "/api/v1/workshops/join/", "/api/v1/workshops/join/status/",
    ]:  # fmt: skip
        assert path in schema["paths"], path
    join_op = schema["paths"]["/api/v1/workshops/join/"]["post"]
    assert {"201", "404", "409", "410"} <= set(join_op["responses"])
