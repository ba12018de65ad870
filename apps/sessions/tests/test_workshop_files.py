"""An instructor reads the names of a running attendee's files, from the attendee's real
server on the real test hub (read-only, never above the server's root). It lives beside the
hub fixtures (apps/sessions/tests/conftest.py) so that the suite starts one hub, not two."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.sessions import services as sessions_services
from apps.sessions.models import Session
from apps.workshops.models import Seat
from apps.workshops.tests import test_pages as pages
from portal import crypto

pytestmark = pytest.mark.django_db

# the workshop pages' fixtures and helpers
repo, instructor, signed_in = pages.repo, pages.instructor, pages.signed_in
make, guest_joins = pages.make, pages.guest_joins


# --- an attendee's files, read from their real server ---------------------------------------


@pytest.mark.hub
def test_the_instructor_reads_the_names_of_a_running_attendees_files(
    signed_in,
    instructor,
    repo,
    hub,
    hub_client,
    make_launch,
    settings,
):
    settings.BINDERY_HUB_URL = hub.public_url
    w = make(instructor, repo)
    guest_joins(Client(), w, "Ada")
    seat = Seat.objects.select_related("session").get()
    session = seat.session
    launch = make_launch(session.hub_user, session.server_name)
    hub_client.ensure_user(session.hub_user)
    hub_client.start_server(session.hub_user, session.server_name, launch.user_options)
    try:
        events = list(hub_client.iter_progress(session.hub_user, session.server_name))
        assert events and events[-1].get("ready"), hub.log()[-2000:]
        token, _ = hub_client.create_server_token(
            session.hub_user, session.server_name, expires_in=600
        )
        Session.objects.filter(pk=session.pk).update(
            status="ready", url=sessions_services.session_url(session),
            token_encrypted=crypto.encrypt(token),
        )  # fmt: skip
        page = signed_in.get(reverse("workshop-seat-files", args=[w.pk, seat.pk]))
        assert page.status_code == 200 and not page.context["error"], page.context["error"]
        names = {e.name: e.type for e in page.context["entries"]}
        assert names["README.md"] == "file" and names["binder"] == "directory", names
        assert "README.md" in page.content.decode()
        inside = signed_in.get(  # a folder opens as its own listing
            reverse("workshop-seat-files", args=[w.pk, seat.pk]), {"path": "binder"}
        )
        assert [e.name for e in inside.context["entries"]] == ["start"]
        escape = signed_in.get(
            reverse("workshop-seat-files", args=[w.pk, seat.pk]), {"path": "../../etc"}
        )
        assert escape.context["path"] == "etc"  # never above the server's root
    finally:
        hub_client.stop_server(session.hub_user, session.server_name)
