"""The build page carries ``error_message`` (postBuild's last line: text a repository
chooses) into its script's data. It must arrive as inert data, never as markup."""

from __future__ import annotations

import json
import re

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build

pytestmark = pytest.mark.django_db

PAYLOAD = "</script><script>window.pwned=1</script>"


def failed_build(message: str) -> Build:
    return Build.objects.create(
        provider="git", spec="x", repo_url="https://example.org/x.git", repo_slug="x",
        display_name="x", resolved_ref="0" * 40, resolved={}, build_key="k",
        status=Build.Status.FAILED, error_code="POSTBUILD_FAILED", error_message=message,
    )  # fmt: skip


def test_an_error_message_with_a_script_renders_inert(client):
    build = failed_build(f"postBuild said: {PAYLOAD}")
    client.force_login(UserFactory())
    response = client.get(f"/builds/{build.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "</script><script>" not in html
    assert "window.pwned=1</script>" not in html
    # Shown to people, escaped, in the error paragraph...
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
    # ...and handed to the page's script as JSON data it can read back exactly.
    data = re.search(
        r'<script id="build-status-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert data is not None
    assert "\\u003C/script\\u003E" in data.group(1)
    decoded = json.loads(data.group(1))
    decoded = json.loads(decoded) if isinstance(decoded, str) else decoded
    assert decoded["error_message"] == f"postBuild said: {PAYLOAD}"
    assert decoded["status"] == "failed"


def test_the_build_page_has_no_inline_script(client):
    build = failed_build("plain failure")
    client.force_login(UserFactory())
    html = client.get(f"/builds/{build.pk}/").content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
