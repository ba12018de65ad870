"""The web side of launching: a /v2/ link from elsewhere never starts anything without the
person's click, and the path to open can never lead out of the session's own server —
through the page and through the API, however it is encoded."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.models import Session
from portal.errors import BinderyError
from portal.hubconfig import hub_config

pytestmark = pytest.mark.django_db

SPEC = "gh/org/repo/main"
ESCAPES = [
    "urlpath=%252e%252e/%252e%252e/user/x/y/",  # decoded once by Django: %2e%2e/%2e%2e/...
    "urlpath=%2e%2e/%2e%2e/user/x/y/",
    "urlpath=%252E%252E%252F%252E%252E%252Fuser%252Fx%252Fy%252F",
    "urlpath=lab/%2e%2e/%2e%2e/%2e%2e/user/x/y/",
    "urlpath=lab/%252e/x",
    "urlpath=%25252e%25252e/user/x/y/",
    "urlpath=lab%255c..%255cuser",
    "urlpath=%252F%252Fevil.example",
    "urlpath=lab%250a",
    "labpath=%252e%252e/%252e%252e/user/x/y/",
    "filepath=%2e%2e/x",
]


@pytest.fixture
def alice(client):
    user = UserFactory()
    client.force_login(user)
    return user


def config_of(response) -> dict:
    html = response.content.decode()
    found = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>',
                      html, re.S)  # fmt: skip
    assert found, html
    return json.loads(found.group(1))


# --- a /v2/ link ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"HTTP_SEC_FETCH_SITE": "cross-site"},
                                     {"HTTP_SEC_FETCH_SITE": "same-site"},  # a user server
                                     {"HTTP_SEC_FETCH_SITE": "none"}])  # fmt: skip
def test_a_link_from_elsewhere_asks_before_launching(client, alice, headers):
    response = client.get(f"/v2/{SPEC}?urlpath=lab", **headers)
    assert response.status_code == 200
    assert config_of(response)["autostart"] is False
    html = response.content.decode()
    assert '<section id="launch-confirm" >' in html or '<section id="launch-confirm">' in html
    assert "org/repo/main" in html
    assert (
        "This repository's code will be able to read and change your files in "
        "<code>persistent/</code>"
    ) in html
    assert re.search(r'<button type="submit" id="launch-button">Launch</button>', html)
    assert 'name="csrfmiddlewaretoken"' in html
    assert not Session.objects.exists()
    assert not Build.objects.exists()


def test_the_portals_own_launch_form_starts_at_once(client, alice):
    response = client.get(f"/v2/{SPEC}", HTTP_SEC_FETCH_SITE="same-origin")
    assert response.status_code == 200
    assert config_of(response)["autostart"] is True
    assert not Session.objects.exists()  # the page's script POSTs; the GET starts nothing


def test_a_cross_site_post_is_refused_by_csrf(alice):
    other_site = Client(enforce_csrf_checks=True)
    other_site.force_login(alice)
    response = other_site.post(f"/v2/{SPEC}", HTTP_SEC_FETCH_SITE="cross-site",
                               HTTP_ORIGIN="https://evil.example")  # fmt: skip
    assert response.status_code == 403
    assert not Session.objects.exists()


def test_anonymous_visitors_are_told_nothing_of_theirs_is_reachable(client, settings):
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    response = client.get(f"/v2/{SPEC}", HTTP_SEC_FETCH_SITE="cross-site")
    assert response.status_code == 200
    assert config_of(response)["autostart"] is False
    assert "cannot see files of yours" in response.content.decode()
    assert not Session.objects.exists()


# --- the path to open -------------------------------------------------------------------------


@pytest.mark.parametrize("query", ESCAPES)
def test_an_escaping_path_is_refused_on_the_page(client, alice, query):
    shown = client.get(f"/v2/{SPEC}?{query}", HTTP_ACCEPT="text/html")
    assert shown.status_code == 400
    assert b"URLPATH_INVALID" in shown.content
    launched = client.post(f"/v2/{SPEC}?{query}", HTTP_ACCEPT="application/json")
    assert launched.status_code == 400
    assert launched.json()["error"] == "URLPATH_INVALID"
    submitted = client.post(f"/v2/{SPEC}?{query}", HTTP_ACCEPT="text/html")  # the form, no JS
    assert submitted.status_code == 400
    assert b"URLPATH_INVALID" in submitted.content
    assert not Session.objects.exists()


@pytest.mark.parametrize("query", ESCAPES)
def test_an_escaping_path_is_refused_by_the_api(token_client, query):
    from urllib.parse import parse_qsl

    ((key, value),) = parse_qsl(query)
    response = token_client(UserFactory()).post(
        "/api/v1/sessions/", {"spec": SPEC, key: value}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "URLPATH_INVALID"
    assert not Session.objects.exists()


def test_a_plain_path_is_kept_canonical():
    assert services.clean_urlpath("lab/tree/a%20b.ipynb") == "lab/tree/a%20b.ipynb"
    assert services.clean_urlpath("/lab/tree/%61.ipynb?x=1") == "lab/tree/a.ipynb?x=1"
    assert services.clean_urlpath(labpath="/notebooks/100%25.ipynb") == (
        "lab/tree/notebooks/100%25.ipynb"
    )
    assert services.clean_urlpath("voila/render/a.ipynb") == "voila/render/a.ipynb"


# --- the final URL ----------------------------------------------------------------------------


def session_with(user, urlpath: str) -> Session:
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key="k", status="ready",
    )  # fmt: skip
    return Session.objects.create(user=user, build=build, hub_user=user.hub_name,
                                  provider="git", spec="x", urlpath=urlpath)  # fmt: skip


def test_the_session_url_stays_inside_the_server(settings):
    settings.BINDERY_HUB_URL = "https://hub.example.net"
    settings.BINDERY_HUB_SUBDOMAIN_HOST = ""
    user = UserFactory()
    session = session_with(user, "lab/tree/a.ipynb")
    prefix = f"https://hub.example.net/user/{user.hub_name}/{session.server_name}/"
    assert services.session_url(session) == prefix + "lab/tree/a.ipynb"
    # A row stored before urlpaths were checked (or written around clean_urlpath) still
    # cannot send anyone elsewhere.
    for stored in ["%2e%2e/%2e%2e/u9/s/", "%252e%252e/x", "../../u9/s/", ".%2e/",
                   "lab/%2e%2e/%2e%2e/x", "%2E%2E", "%ff%2e%2e/"]:  # fmt: skip
        Session.objects.filter(pk=session.pk).update(urlpath=stored)
        session.refresh_from_db()
        with pytest.raises(BinderyError) as caught:
            services.session_url(session)
        assert caught.value.code == "URLPATH_INVALID", stored


def test_per_user_subdomains(settings, tmp_path):
    settings.BINDERY_HUB_URL = "https://hub.example.net"
    settings.BINDERY_HUB_SUBDOMAIN_HOST = "https://hub.example.net"
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    assert hub_config()["JupyterHub"]["subdomain_host"] == "https://hub.example.net"
    user = UserFactory()
    session = session_with(user, "lab")
    assert services.session_url(session) == (
        f"https://{user.hub_name}.hub.example.net/user/{user.hub_name}/{session.server_name}/lab"
    )


def test_the_launch_button_starts_it(client, alice, git_host):
    from urllib.parse import quote

    repo = git_host.create_repo(f"org/click-{alice.pk}", {"requirements.txt": "\n"})
    page = f"/v2/git/{quote(repo.url, safe='')}/main?labpath=a.ipynb"
    raw = {"REQUEST_URI": page.split("?")[0]}  # as a WSGI server passes the undecoded path
    assert client.get(page, HTTP_SEC_FETCH_SITE="cross-site", **raw).status_code == 200
    assert not Session.objects.exists()
    # The form itself (no script): the launch starts and the page follows it.
    response = client.post(page, HTTP_ACCEPT="text/html", **raw)
    assert response.status_code == 302
    session = Session.objects.get()
    assert response["Location"] == f"/sessions/{session.pk}/"
    assert session.user == alice and session.urlpath == "lab/tree/a.ipynb"


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
@pytest.mark.django_db(transaction=True)
async def test_a_cookie_launch_through_build_from_another_site_is_refused(site, settings):
    """An EventSource on another site (or on a user server: another port of this host is
    same-site) would carry the visitor's cookies: /build/ starts nothing for it."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    user = await sync_to_async(UserFactory)()
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    headers = {"Accept": "text/event-stream", "Sec-Fetch-Site": site}
    # a loopback URL the host checks refuse: nothing here may reach beyond 127.0.0.1
    path = "/build/git/http%3A%2F%2F127.0.0.1%3A9%2Frepo.git/main"
    response = await client.get(path, headers=headers)
    assert response.status_code == 403
    assert json.loads(response.content)["error"] == "CROSS_SITE_LAUNCH"
    assert await Session.objects.acount() == 0 and await Build.objects.acount() == 0
    # the control: the same request from the portal's own page is not refused this way
    own = await client.get(path, headers={**headers, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own["Content-Type"].startswith("text/event-stream")
