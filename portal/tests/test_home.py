"""The home page (signed out and in), its preview (/launch-link: host checks, badges, the
session already running) and the site navigation, through the real views."""

from __future__ import annotations

import html
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.urls import reverse

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions.models import Session
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db

ALLOWED = "127.0.0.1:19560"
URL = f"http://{ALLOWED}/lab/ocean-model.git"
SPEC = f"{quote(URL, safe='')}/HEAD"


@pytest.fixture
def allowed_host(settings):
    settings.BINDERY_ALLOWED_GIT_HOSTS = [ALLOWED]
    settings.SITE_URL = "https://bindery.example.org"


def preview(client, repository, **params):
    return client.get("/launch-link", {"repository": repository, **params})


def test_signed_out_home_has_the_form_and_asks_to_sign_in_to_launch(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="launch-form"' in page and 'id="repository"' in page
    assert 'data-signed-in="no"' in page
    assert "Sign in to launch" in page
    assert f'href="{reverse("account_signup")}' in page
    assert "js/launchform.js" in page


def test_signed_in_home_launches(client):
    client.force_login(UserFactory())
    page = client.get("/").content.decode()
    assert 'data-signed-in="yes"' in page
    assert ">Launch</button>" in page
    assert "Sign in to launch" not in page


def test_signed_out_launch_goes_to_sign_in_keeping_the_spec(client, allowed_host, settings):
    settings.BINDERY_ANONYMOUS_LAUNCH = False
    body = preview(client, URL).json()
    # REQUEST_URI: the undecoded request line, as a WSGI server passes it (the test client
    # alone hands the view only the decoded path).
    response = client.get(body["launch_path"], REQUEST_URI=body["launch_path"])
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/accounts/login/?next=")
    assert parse_qs(urlsplit(location).query)["next"] == [f"/v2/git/{SPEC}"]
    assert Session.objects.count() == 0


def test_preview_of_an_allowed_repository_has_the_link_and_three_badges(client, allowed_host):
    response = preview(client, URL, path="index.ipynb")
    assert response.status_code == 200
    body = response.json()
    link = f"https://bindery.example.org/v2/git/{SPEC}?labpath=index.ipynb"
    assert body["link"] == body["url"] == link
    assert body["launch_path"] == f"/v2/git/{SPEC}?labpath=index.ipynb"
    assert body["name"] == f"{ALLOWED}/lab/ocean-model @ HEAD"
    assert body["markdown"] == f"[![Binder](https://bindery.example.org/badge_logo.svg)]({link})"
    assert body["rst"] == (
        ".. image:: https://bindery.example.org/badge_logo.svg\n   :target: " + link
    )
    assert body["running"] is None
    assert body["signed_in"] is False


@pytest.mark.parametrize(
    "repository",
    ["http://127.0.0.1:9/demo.git", "http://10.1.2.3/demo.git", "http://localhost/demo.git"],
)
def test_preview_of_a_refused_host_has_no_link_nor_badge_but_a_sentence(client, repository):
    response = preview(client, repository)
    assert response.status_code == 403
    body = response.json()
    assert body["refused"] is True
    assert body["error"] == "HOST_FORBIDDEN"
    assert "private or local network" in body["detail"]
    assert "HOST_FORBIDDEN" not in body["detail"]
    assert not {"link", "markdown", "rst", "url", "launch_path"} & body.keys()


def test_preview_of_a_banned_repository_is_refused(client, settings):
    settings.BINDERY_BANNED_SPECS = {"gh": ["^evil-org/.*"]}
    response = preview(client, "https://github.com/evil-org/miner")
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "SPEC_BANNED" and body["refused"] is True
    assert "link" not in body


def test_preview_of_nonsense_explains_without_refusing_the_host(client):
    response = preview(client, "not a repository")
    assert response.status_code == 400
    body = response.json()
    assert body["refused"] is False and "link" not in body


def test_preview_offers_the_session_already_running(client, allowed_host):
    user = UserFactory()
    build = Build.objects.create(
        provider="git", spec=SPEC, repo_url=URL, repo_slug="ocean-model", display_name="x",
        resolved_ref="b" * 40, resolved={}, build_key="k", status="ready", requested_by=user,
    )  # fmt: skip
    session = Session.objects.create(user=user, build=build, hub_user=user.hub_name,
                                     provider="git", spec=SPEC, status="ready")  # fmt: skip
    client.force_login(user)
    running = preview(client, URL).json()["running"]
    assert running == {
        "id": str(session.pk), "status": "Ready", "name": running["name"],
        "page": reverse("session-launch", args=[session.pk]),
        "open": reverse("session-open", args=[session.pk]),
    }  # fmt: skip
    # Another ref is another launch.
    assert preview(client, URL, ref="dev").json()["running"] is None
    # Once it is stopping, Launch starts a new one again.
    Session.objects.filter(pk=session.pk).update(status="stopping")
    assert preview(client, URL).json()["running"] is None


# --- navigation -------------------------------------------------------------------------------


def current_links(page: str) -> list[str]:
    """The labels of the navigation entries marked as the current page."""
    import re

    found = re.findall(r'aria-current="page"[^>]*>([^<]+)<', page)
    return [html.unescape(label).strip() for label in found]


@pytest.mark.parametrize(
    ("path", "current"),
    [
        ("/", ["Launch"]),
        ("/sessions/", ["Sessions"]),
        ("/builds/", ["Builds"]),
        ("/volumes/", ["Volumes"]),
        ("/teams/", ["Teams"]),
        ("/teams/ocean-lab/", ["Teams"]),
        ("/account/tokens/", ["API tokens"]),
        ("/account/profile/", ["Profile"]),
    ],
)
def test_the_navigation_marks_the_section_of_every_page(client, path, current):
    user = UserFactory()
    team = Team.objects.create(name="Ocean Lab", slug="ocean-lab")
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200
    labels = current_links(response.content.decode())
    assert [label for label in labels if label != user.label] == current


def test_account_pages_mark_the_account_menu(client):
    user = UserFactory()
    client.force_login(user)
    page = client.get("/account/tokens/").content.decode()
    assert f'<summary aria-current="page">{user.label}</summary>' in page


def test_the_navigation_has_a_menu_button_for_small_screens(client):
    client.force_login(UserFactory())
    page = client.get("/").content.decode()
    assert (
        '<button type="button" class="nav-toggle secondary outline" aria-expanded="false" '
        'aria-controls="site-nav">Menu</button>'
    ) in page
    assert 'id="site-nav"' in page
    assert f'href="{reverse("credentials")}"' in page
