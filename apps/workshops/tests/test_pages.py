"""The workshop pages through the browser's surface: the instructor's (create, the workshop
with its code, QR code, roster and actions), the attendee's (/join, /w/<code> before
opening, open, full, closed; joining as a guest or a user) and the roster's websocket.
Real database rows and real git repositories over HTTP; no server is started (joins make
their session rows; the hub is the full-flow tests' part)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas.models import Quota
from apps.sessions.models import Session
from apps.sessions.owners import SESSION_KEY
from apps.workshops import services
from apps.workshops.models import Seat, Workshop
from portal.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/ws-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


@pytest.fixture
def instructor(db):
    user = UserFactory()
    Quota.objects.create(scope="user", user=user, values={"sessions": 50})
    return user


@pytest.fixture
def signed_in(client, instructor):
    client.force_login(instructor)
    return client


def make(owner, repo, *, seats=3, opens_in=timedelta(minutes=-1), hours=2, built=True,
         **extra) -> Workshop:  # fmt: skip
    now = timezone.now()
    extra.setdefault("guests", True)
    w = services.create_workshop(
        owner, title="Intro to Python", repo_url=repo.url, opens_at=now + opens_in,
        closes_at=now + opens_in + timedelta(hours=hours), seats=seats, **extra,
    )  # fmt: skip
    if built and w.build_id is not None:
        Build.objects.filter(pk=w.build_id).update(status="ready", result={})
    return Workshop.objects.select_related("build").get(pk=w.pk)


def join_url(w: Workshop) -> str:
    return reverse("workshop-join", args=[w.code])


def guest_joins(client: Client, w: Workshop, name: str = "Ada"):
    return client.post(join_url(w), {"name": name})


# --- the instructor's pages -----------------------------------------------------------------


def test_instructor_sees_the_page_outsider_gets_404_anonymous_signs_in(client, instructor, repo):
    w = make(instructor, repo)
    page = reverse("workshop", args=[w.pk])
    assert client.get(page).status_code == 302
    assert "/accounts/login/" in client.get(page)["Location"]
    client.force_login(UserFactory())
    for url in (page, reverse("workshop-qr", args=[w.pk]),
                reverse("workshop-roster-csv", args=[w.pk])):  # fmt: skip
        assert client.get(url).status_code == 404
    assert client.post(reverse("workshop-action", args=[w.pk, "close"])).status_code == 404
    client.force_login(instructor)
    response = client.get(page)
    assert response.status_code == 200
    body = response.content.decode()
    assert w.code in body and f"/w/{w.code}" in body
    assert 'id="roster-config"' in body and "<script>" not in body  # data via json_script only
    assert Workshop.objects.get(pk=w.pk).closed_at is None


def test_team_admins_see_their_teams_workshop_members_do_not(client, crew, repo):
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 10})
    w = make(crew.admin, repo, team=crew.team)
    client.force_login(crew.owner)
    assert client.get(reverse("workshop", args=[w.pk])).status_code == 200
    client.force_login(crew.member)
    assert client.get(reverse("workshop", args=[w.pk])).status_code == 404


def form_data(repo, **changes):
    data = {
        "title": "Data carpentry", "repository": repo.url, "ref": "", "urlpath": "",
        "opens_at": "2030-05-14T09:00", "closes_at": "2030-05-14T12:30",
        "time_zone": "Europe/Berlin", "seats": "25", "cpu": "", "memory": "1G",
        "session_minutes": "90", "guests": "on", "email_domains": "", "team": "",
    }  # fmt: skip
    data.update(changes)
    return data


def test_create_form_makes_a_pinned_prebuilt_workshop_in_its_time_zone(signed_in, repo):
    assert signed_in.get(reverse("workshops")).status_code == 200
    response = signed_in.post(reverse("workshops"), form_data(repo))
    w = Workshop.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("workshop", args=[w.pk])
    assert (w.title, w.seats, w.session_minutes, w.guests) == ("Data carpentry", 25, 90, True)
    assert w.memory_bytes == 1024**3 and w.time_zone == "Europe/Berlin"
    assert w.opens_at.isoformat() == "2030-05-14T07:00:00+00:00"  # 09:00 in Berlin (CEST)
    assert len(w.resolved_ref) == 40 and w.build is not None
    assert w.build.status == "pending"
    listed = signed_in.get(reverse("workshops")).content.decode()
    assert "Data carpentry" in listed and w.code in listed


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"closes_at": "2030-05-14T08:00"}, "closes_at", "must close after it opens"),
        ({"title": ""}, "title", "required"),
        ({"memory": "lots"}, "memory", "a size such as 2G"),
        ({"seats": "60"}, "seats", "do not fit"),  # the quota holds 50 sessions
        ({"email_domains": "not a domain"}, "email_domains", "is not a domain"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "valid choice"),
    ],
)
def test_create_form_errors_are_beside_their_field_and_nothing_is_made(
    signed_in, repo, changes, field, words
):
    response = signed_in.post(reverse("workshops"), form_data(repo, **changes))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors and words in " ".join(errors[field]), errors
    assert not Workshop.objects.exists() and not Build.objects.exists()


def test_an_unknown_repository_is_said_beside_the_repository(signed_in, repo, git_host):
    response = signed_in.post(
        reverse("workshops"), form_data(repo, repository=repo.url.replace("/ws-", "/nope-"))
    )
    assert response.status_code == 200
    assert "repository" in response.context["form"].errors
    assert not Workshop.objects.exists()


def test_rotating_the_code_retires_the_old_one(signed_in, instructor, repo, client):
    w = make(instructor, repo)
    old = w.code
    response = signed_in.post(reverse("workshop-action", args=[w.pk, "rotate"]))
    assert response.status_code == 302
    w.refresh_from_db()
    assert w.code != old
    visitor = Client()
    gone = visitor.get(f"/w/{old}")
    assert gone.status_code == 404 and "No workshop has this code" in gone.content.decode()
    assert visitor.get(f"/w/{w.code}").status_code == 200


def test_qr_code_is_an_svg_of_the_join_url(signed_in, instructor, repo):
    w = make(instructor, repo)
    response = signed_in.get(reverse("workshop-qr", args=[w.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    svg = response.content.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<path" in svg


def test_roster_csv_lists_guests_and_users(signed_in, instructor, repo):
    w = make(instructor, repo)
    attendee = UserFactory(email="grace@uni.edu")
    guest_joins(Client(), w, "=HYPERLINK(1)")
    services.join(w.code, user=attendee)
    response = signed_in.get(reverse("workshop-roster-csv", args=[w.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["name", "signed in as", "joined at", "status", "last activity", "memory"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [
        ("'=HYPERLINK(1)", "guest", "launching"),  # a formula stays text in a spreadsheet
        (attendee.get_full_name() or attendee.email, "grace@uni.edu", "launching"),
    ]


def test_roster_shows_attendees_and_the_instructor_stops_and_restarts_one(
    signed_in, instructor, repo
):
    w = make(instructor, repo)
    guest_joins(Client(), w, "Ada")
    seat = Seat.objects.get()
    page = signed_in.get(reverse("workshop", args=[w.pk]))
    assert page.context["roster"]["rows"][0]["name"] == "Ada"
    assert f'data-seat="{seat.pk}"' in page.content.decode()
    stop = signed_in.post(reverse("workshop-seat-action", args=[w.pk, seat.pk, "stop"]))
    assert stop.status_code == 302
    assert Session.objects.get(pk=seat.session_id).status == "stopping"
    old = seat.session_id
    signed_in.post(reverse("workshop-seat-action", args=[w.pk, seat.pk, "restart"]))
    seat.refresh_from_db()
    assert seat.session_id != old and seat.session.status == "launching"
    signed_in.post(reverse("workshop-action", args=[w.pk, "stop-all"]))
    assert Session.objects.get(pk=seat.session_id).status == "stopping"


def test_the_roster_reads_in_the_same_queries_for_one_seat_or_many(
    instructor, repo, django_assert_num_queries
):
    from apps.workshops.presentation import roster_payload

    w = make(instructor, repo, seats=10)
    guest_joins(Client(), w, "Ada")
    with django_assert_num_queries(4):  # the workshop, the seats, the warm pool's two
        roster_payload(w.pk)
    for name in ("Bob", "Cy", "Dee"):
        guest_joins(Client(), w, name)
    with django_assert_num_queries(4):
        assert len(roster_payload(w.pk)["rows"]) == 4


def test_seat_actions_of_another_workshop_are_404(signed_in, instructor, repo):
    mine = make(instructor, repo)
    other_owner = UserFactory()
    Quota.objects.create(scope="user", user=other_owner, values={"sessions": 5})
    other = make(other_owner, repo)
    guest_joins(Client(), other, "Eve")
    seat = Seat.objects.get(workshop=other)
    url = reverse("workshop-seat-action", args=[mine.pk, seat.pk, "stop"])
    assert signed_in.post(url).status_code == 404
    assert signed_in.get(reverse("workshop-seat-files", args=[mine.pk, seat.pk])).status_code == 404
    assert Session.objects.get(pk=seat.session_id).status == "launching"


def test_add_seats_extend_and_lengthen_then_close(signed_in, instructor, repo):
    w = make(instructor, repo, seats=2)
    act = lambda name, data=None: signed_in.post(  # noqa: E731
        reverse("workshop-action", args=[w.pk, name]), data or {}
    )
    assert act("add-seats", {"add": "3"}).status_code == 302
    later = timezone.localtime(w.closes_at + timedelta(hours=1), timezone.get_fixed_timezone(0))
    act("extend", {"closes_at": later.strftime("%Y-%m-%dT%H:%M")})  # the workshop's zone: UTC
    act("session-length", {"session_minutes": "45"})
    w.refresh_from_db()
    assert (w.seats, w.session_minutes) == (5, 45)
    assert abs((w.closes_at - later).total_seconds()) < 60
    act("close")
    w.refresh_from_db()
    assert w.closed_at is not None
    assert signed_in.get(reverse("workshop", args=[w.pk])).status_code == 200


def test_a_failed_prebuild_is_said_with_a_retry(signed_in, instructor, repo):
    w = make(instructor, repo, built=False)
    Build.objects.filter(pk=w.build_id).update(status="failed", error_message="No such file")
    page = signed_in.get(reverse("workshop", args=[w.pk])).content.decode()
    assert "The environment did not build" in page and "No such file" in page
    assert 'id="retry-build"' in page
    first = w.build_id
    signed_in.post(reverse("workshop-action", args=[w.pk, "update-environment"]))
    w.refresh_from_db()
    assert w.build_id != first and w.build.status == "pending"


def test_files_of_a_seat_without_a_running_server_say_so(signed_in, instructor, repo):
    w = make(instructor, repo)
    guest_joins(Client(), w, "Ada")
    seat = Seat.objects.get()
    response = signed_in.get(reverse("workshop-seat-files", args=[w.pk, seat.pk]))
    assert response.status_code == 200
    assert "not running" in response.content.decode()


# --- the attendee's pages -------------------------------------------------------------------


def test_join_page_takes_a_typed_code_in_any_case(client, instructor, repo):
    w = make(instructor, repo)
    assert client.get("/join").status_code == 200
    typed = f"{w.code[:3].lower()} - {w.code[3:]}"
    response = client.get("/join", {"code": typed})
    assert response.status_code == 302 and response["Location"] == f"/w/{w.code}"
    assert client.get(f"/w/{w.code.lower()}")["Location"] == f"/w/{w.code}"
    assert client.get("/w/NOCODE").status_code == 404


def test_before_opening_the_page_counts_down_and_seats_nobody(client, instructor, repo):
    w = make(instructor, repo, opens_in=timedelta(hours=3), time_zone="Asia/Tokyo")
    response = client.get(join_url(w))
    assert response.status_code == 200
    body = response.content.decode()
    opens = timezone.localtime(w.opens_at, timezone.get_fixed_timezone(9 * 60))
    assert f"{opens:%H:%M}" in body and "Asia/Tokyo" in body
    assert 'id="countdown"' in body and 'id="wait-config"' in body
    status = client.get(join_url(w) + "/status").json()
    assert status["status"] == "scheduled" and not status["ready"] and status["seconds"] > 3 * 3500
    assert guest_joins(client, w).status_code == 409
    assert not Seat.objects.exists() and not Session.objects.filter(workshop=w).exists()


def test_after_closing_the_page_is_gone(client, instructor, repo):
    w = make(instructor, repo)
    services.close_workshop(instructor, w)
    response = client.get(join_url(w))
    assert response.status_code == 410 and "has closed" in response.content.decode()
    assert guest_joins(client, w).status_code == 410
    assert not Seat.objects.exists()


def test_a_full_workshop_says_so_and_the_seated_keep_their_seat(client, instructor, repo):
    w = make(instructor, repo, seats=1)
    assert guest_joins(client, w).status_code == 302
    late = Client()
    response = late.get(join_url(w))
    assert response.status_code == 409
    assert "Its only seat is taken" in response.content.decode()
    assert "ask your instructor" in response.content.decode().lower()
    assert guest_joins(late, w, "Late").status_code == 409
    assert Seat.objects.count() == 1
    assert client.get(join_url(w)).status_code == 200  # the seated guest sees their seat


def test_a_guest_joins_and_lands_on_their_launch_page_with_the_time_left(client, instructor, repo):
    w = make(instructor, repo, session_minutes=72)
    form = client.get(join_url(w))
    assert form.status_code == 200 and 'name="name"' in form.content.decode()
    response = guest_joins(client, w, "Ada Lovelace")
    seat = Seat.objects.get()
    session = seat.session
    assert seat.name == "Ada Lovelace" and seat.user is None and session.workshop_id == w.pk
    assert session.anonymous_owner == client.session[SESSION_KEY] and session.user is None
    assert response.status_code == 302
    assert response["Location"] == reverse("session-launch", args=[session.pk])
    launch = client.get(response["Location"])
    assert launch.status_code == 200
    assert launch.context["banner"]["left"] in ("1 h 12 min", "1 h 11 min")
    assert 'id="seat-banner"' in launch.content.decode()
    seated = client.get(join_url(w)).content.decode()
    assert "Your seat" in seated and "Open your server" in seated and "left" in seated


def test_an_empty_name_is_refused_beside_the_field(client, instructor, repo):
    w = make(instructor, repo)
    response = guest_joins(client, w, "  ")
    assert response.status_code == 400
    assert "display name" in response.content.decode()
    assert not Seat.objects.exists()


def test_the_same_browser_gets_its_seat_back_another_browser_another(client, instructor, repo):
    w = make(instructor, repo)
    first = guest_joins(client, w, "Ada")["Location"]
    again = guest_joins(client, w, "Ada again")["Location"]
    assert first == again and Seat.objects.count() == 1
    other = Client()
    assert guest_joins(other, w, "Bob")["Location"] != first
    assert Seat.objects.count() == 2


def test_a_guest_cannot_open_another_guests_session(client, instructor, repo):
    w = make(instructor, repo)
    guest_joins(client, w, "Ada")
    ada = Seat.objects.get().session
    eve = Client()
    guest_joins(eve, w, "Eve")
    for name in ("session-launch", "session-open"):
        assert eve.get(reverse(name, args=[ada.pk])).status_code == 404
    assert client.get(reverse("session-launch", args=[ada.pk])).status_code == 200


def test_sign_in_required_sends_guests_to_sign_in_and_users_join(client, instructor, repo):
    w = make(instructor, repo, guests=False)
    page = client.get(join_url(w)).content.decode()
    assert "Sign in to join" in page and f"next=/w/{w.code}" in page.replace("%2F", "/")
    refused = client.post(join_url(w), {"name": "Ada"})
    assert refused.status_code == 302 and "/accounts/login/" in refused["Location"]
    assert not Seat.objects.exists()
    attendee = UserFactory()
    client.force_login(attendee)
    assert 'id="join-button"' in client.get(join_url(w)).content.decode()
    joined = client.post(join_url(w))
    seat = Seat.objects.get()
    assert seat.user == attendee and seat.session.user == attendee
    assert joined["Location"] == reverse("session-launch", args=[seat.session_id])
    assert client.post(join_url(w))["Location"] == joined["Location"]  # their own seat back


def test_an_email_domain_refusal_is_said(client, instructor, repo):
    w = make(instructor, repo, guests=False, email_domains="uni.edu")
    client.force_login(UserFactory(email="eve@elsewhere.org"))
    response = client.post(join_url(w))
    assert response.status_code == 403 and "uni.edu" in response.content.decode()
    assert not Seat.objects.exists()


# --- the roster's websocket -----------------------------------------------------------------


async def _connect(user, workshop_id):
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/workshops/{workshop_id}/"
    )
    communicator.scope["user"] = user
    communicator.scope["session"] = {}
    connected, code = await communicator.connect(timeout=10)
    return communicator, connected, code


async def _next_roster(communicator, *, until=lambda m: True):
    while True:
        message = json.loads(await communicator.receive_from(timeout=10))
        if message["kind"] == "roster" and until(message):
            return message


@pytest.mark.django_db(transaction=True)
async def test_the_instructor_gets_the_roster_then_each_join(git_host):
    repo = await sync_to_async(git_host.create_repo)(
        f"org/ws-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""}
    )
    owner = await sync_to_async(UserFactory)()
    await Quota.objects.acreate(scope="user", user=owner, values={"sessions": 10})
    w = await sync_to_async(make)(owner, repo)
    communicator, connected, _ = await _connect(owner, w.pk)
    assert connected
    first = await _next_roster(communicator)
    assert first["rows"] == [] and first["workshop"]["seats_taken"] == 0
    assert first["workshop"]["status"] == "open"
    await sync_to_async(services.join)(w.code, name="Ada")
    update = await _next_roster(communicator, until=lambda m: m["rows"])
    assert [r["name"] for r in update["rows"]] == ["Ada"]
    assert update["rows"][0]["who"] == "guest" and update["workshop"]["seats_taken"] == 1
    seat = await Seat.objects.select_related("session").aget()
    await sync_to_async(services.stop_seat)(owner, w, seat)
    stopped = await _next_roster(
        communicator, until=lambda m: m["rows"][0]["status"] != "launching"
    )
    assert stopped["rows"][0]["status"] == "stopping"
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_outsider_is_refused_the_roster(git_host):
    repo = await sync_to_async(git_host.create_repo)(
        f"org/ws-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""}
    )
    owner, outsider = await sync_to_async(UserFactory)(), await sync_to_async(UserFactory)()
    await Quota.objects.acreate(scope="user", user=owner, values={"sessions": 10})
    w = await sync_to_async(make)(owner, repo)
    _, connected, code = await _connect(outsider, w.pk)
    assert not connected and code == 4404
    from django.contrib.auth.models import AnonymousUser

    _, connected, code = await _connect(AnonymousUser(), w.pk)
    assert not connected and code == 4404
