"""Every response carries the Content-Security-Policy; pages hold no inline script for it to
block; the portal's cookies have names of their own (never the hub's)."""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from apps.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize(
    "path", ["/", "/health", "/api/v1/me/", "/api/docs/", "/admin/login/", "/no-such-page",
             "/static/js/launch.js", "/accounts/login/"],
)  # fmt: skip
def test_every_response_has_the_policy(client, path):
    response = client.get(path)
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    # The launch and build pages' websockets go to this host, and only there.
    assert policy["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]


def test_over_https_only_wss_is_allowed(client):
    policy = directives(client.get("/", secure=True))
    assert policy["connect-src"] == ["'self'", "wss://testserver"]


def test_signed_in_pages_hold_no_inline_script(client, crew):
    client.force_login(crew.owner)
    for path in ["/", "/sessions/", "/account/tokens/", f"/teams/{crew.team.slug}/",
                 "/api/docs/"]:  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers


def test_the_portals_cookies_have_their_own_names(client):
    user = UserFactory()
    client.force_login(user)
    response = client.get("/account/tokens/")
    assert settings.SESSION_COOKIE_NAME == "bindery_sessionid"
    assert settings.CSRF_COOKIE_NAME == "bindery_csrftoken"
    assert "bindery_sessionid" in client.cookies
    assert "bindery_csrftoken" in response.cookies
    assert "sessionid" not in client.cookies and "csrftoken" not in client.cookies
