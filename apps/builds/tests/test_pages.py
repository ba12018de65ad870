"""The build pages: a failed build says why once, marks the step its log stopped in and
offers "Build again" (filled in); a ready build launches from its receipt, for a team too;
repositories are named for people."""

from __future__ import annotations

import html as htmllib
import re
import uuid

import pytest

from apps.builds.logs import BuildLog
from apps.builds.models import Build
from apps.builds.services import build_from_text, fail_build

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/pages-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})


@pytest.mark.django_db(transaction=True)  # the log writes from its own thread
def test_a_failed_build_says_why_once_at_its_step_with_build_again(client, alice, repo):
    client.force_login(alice)
    build = build_from_text(alice, repo.url, "main").build
    log = BuildLog(build)
    log("Cloning the repository", phase="fetching")
    log("Installing packages with uv", phase="building")
    log.close()
    message = "Installing the requirements failed: no version of nosuchpkg matches."
    fail_build(build.pk, message, code="BUILD_DEPENDENCIES")
    response = client.get(f"/builds/{build.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    # once as people read it (the script's status data is not shown)
    visible = re.sub(r"<script.*?</script>", "", htmllib.unescape(html), flags=re.S)
    assert visible.count(message) == 1
    panel = re.search(r'data-part="message">(.*?)</p>', html).group(1)
    assert "BUILD_DEPENDENCIES" not in panel
    assert "Error code <code>BUILD_DEPENDENCIES</code>" in html
    assert re.findall(r'<li data-phase="(\w+)" class="failed"', html) == ["building"]
    again = re.search(r'<a href="([^"]+)"[^>]*data-action="retry">Build again</a>', html)
    url = htmllib.unescape(again.group(1))
    assert url.startswith("/builds/?repository=")
    form = client.get(url).content.decode()
    assert f'value="{repo.url}"' in form and 'value="main"' in form
    assert "Launch this build" not in html


def test_a_ready_build_launches_from_its_receipt_for_a_team(client, crew, repo):
    client.force_login(crew.member)
    build = build_from_text(crew.member, repo.url, "main").build
    Build.objects.filter(pk=build.pk).update(status=Build.Status.READY, phase="built")
    html = client.get(f"/builds/{build.pk}/").content.decode()
    action = re.search(r'<form method="get" action="([^"]+)" class="launch-build"', html).group(1)
    assert action == f"/v2/{build.resolved['persistent_spec']}"
    assert repo.head in action  # pinned to the commit: nothing is rebuilt
    assert '<option value="ocean-lab">Ocean Lab</option>' in html
    # the launch page it leads to offers the same team, chosen
    page = client.get(action + "?team=ocean-lab", REQUEST_URI=action).content.decode()
    assert '<option value="ocean-lab" selected>' in page


def test_builds_are_named_for_people(client, alice, repo):
    client.force_login(alice)
    build = build_from_text(alice, repo.url, "main").build
    place = repo.url.split("//", 1)[1].removesuffix(".git")
    detail = client.get(f"/builds/{build.pk}/").content.decode()
    assert f"<title>Build of {place} @ main ({repo.head[:7]}) · Bindery</title>" in detail
    assert f"commit {repo.head}" in detail  # the full value on hover
    listing = client.get("/builds/").content.decode()
    assert f'<span class="repo-place">{place}</span>' in listing
    history = client.get(f"/builds/repo/{build.repo_slug}/").content.decode()
    assert f"<h1>{place}</h1>" in history


def test_an_empty_build_list_says_what_to_do(client, alice):
    client.force_login(alice)
    assert "No builds yet." in client.get("/builds/").content.decode()


def test_a_refused_build_shows_the_sentence_with_the_code_beside_it(client, alice):
    client.force_login(alice)
    response = client.post("/builds/", {"repository": "file:///etc/passwd"})
    html = response.content.decode()
    assert response.status_code == 200
    error = re.search(r'<small class="error">(.*?)</small>', html).group(1)
    assert "(" not in error and "URL_" not in error
    assert "Error code <code>" in html
    assert not Build.objects.exists()
