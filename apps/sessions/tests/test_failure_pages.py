"""Failed and refused launches, as pages: each says what happened once, in a sentence, marks
the step that failed, and offers the way on; the stable code is there, small, outside the
sentence. Also the launch page's human repository names and its team picker."""

from __future__ import annotations

import html as htmllib
import json
import re
import uuid
from urllib.parse import quote

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.services import fail_build
from apps.quotas.models import Quota
from apps.sessions import services
from apps.sessions.models import Session

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = UserFactory(username="alice")
    client.force_login(user)
    return user


def post_page(client, page: str, data: dict | None = None):
    """The launch form without script: a POST that wants a page back."""
    raw = {"REQUEST_URI": page.split("?")[0]}  # the undecoded path, as a WSGI server passes it
    return client.post(page, data or {}, HTTP_ACCEPT="text/html", **raw)


def panel(response) -> dict[str, str]:
    """The failure panel's parts, as text."""
    html = response.content.decode()
    found = re.search(r'<article class="error-card error-panel"[^>]*>(.*?)</article>', html, re.S)
    assert found, html
    body = found.group(1)

    def part(name: str) -> str:
        match = re.search(rf'data-part="{name}"[^>]*>(.*?)</(?:p|h2|small)>', body, re.S)
        return htmllib.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip() if match else ""

    links = re.findall(r'<a href="([^"]+)"[^>]*data-action="([^"]+)">([^<]+)</a>', body)
    heading = re.search(r'<h1 id="launch-title">(.*?)</h1>', html, re.S)
    title = part("title") or (htmllib.unescape(heading.group(1)) if heading else "")
    return {
        "title": title,
        "message": part("message"),
        "code": part("code"),
        "links": [(htmllib.unescape(u), k, t) for u, k, t in links],
        "html": html,
    }


def failed_step(response) -> list[str]:
    return re.findall(r'<li data-phase="(\w+)" class="failed"', response.content.decode())


def says_once(response, sentence: str, code: str) -> dict:
    """The sentence is on the page exactly once, the code is beside it and not inside it."""
    shown = panel(response)
    page_text = re.sub(r"<script.*?</script>", "", htmllib.unescape(shown["html"]), flags=re.S)
    assert page_text.count(sentence) == 1, page_text
    assert shown["message"] == sentence
    # the title is said once too: the page's heading, not repeated in the panel
    found = re.search(r'<h1 id="launch-title">(.*?)</h1>', shown["html"])
    assert found is not None
    title = found.group(1)
    assert title == htmllib.escape(shown["title"], quote=False)
    assert htmllib.unescape(shown["html"]).count(f">{shown['title']}</h") == 1
    assert code not in shown["message"]
    assert shown["code"] == f"Error code {code}"
    return shown


def git_page(url: str, ref: str = "main") -> str:
    return f"/v2/git/{quote(url, safe='')}/{ref}"


# --- refusals before anything starts ----------------------------------------------------------


def test_an_invalid_spec_is_said_once_at_fetching_with_edit_and_retry(client, alice):
    response = post_page(client, "/v2/gh/not-a-spec")
    assert response.status_code == 400
    shown = panel(response)
    assert "SPEC_INVALID" not in shown["message"] and shown["code"] == "Error code SPEC_INVALID"
    assert htmllib.unescape(shown["html"]).count(shown["message"]) == 1
    assert failed_step(response) == ["fetching"]
    assert shown["links"][0][1:] == ("retry", "Edit and retry")
    assert not Session.objects.exists()


def test_a_forbidden_host_is_said_once_with_edit_and_retry_prefilled(client, alice):
    response = post_page(client, git_page("http://127.0.0.1:9/lab/demo.git"))
    assert response.status_code == 403
    shown = says_once(
        response,
        "The host 127.0.0.1 is on a private or local network and is not allowed here.",
        "HOST_FORBIDDEN",
    )
    assert failed_step(response) == ["fetching"]
    retry = shown["links"][0]
    assert (
        retry[0] == "/repos/launch/?repository=http%3A%2F%2F127.0.0.1%3A9%2Flab%2Fdemo.git&ref=main"
    )
    # the retry form comes back filled in
    form = client.get(retry[0]).content.decode()
    assert 'value="http://127.0.0.1:9/lab/demo.git"' in form and 'value="main"' in form
    assert not Session.objects.exists()


def test_a_missing_repository_offers_retry_and_a_credential(client, alice, git_host):
    response = post_page(client, git_page(f"{git_host.base_url}/org/nothing-here.git"))
    assert response.status_code == 404
    shown = panel(response)
    assert shown["code"] == "Error code REPO_NOT_FOUND_OR_PRIVATE"
    assert "REPO_NOT_FOUND_OR_PRIVATE" not in shown["message"] and shown["message"]
    assert htmllib.unescape(shown["html"]).count(shown["message"]) == 1
    assert failed_step(response) == ["fetching"]
    kinds = [kind for _, kind, _ in shown["links"]]
    assert kinds == ["retry", "credential"]
    assert shown["links"][1][0] == f"/repos/credentials/?host={quote(git_host.host)}"
    assert not Session.objects.exists()


@pytest.fixture
def repo(git_host, alice):
    return git_host.create_repo(f"org/fail-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})


def test_the_quota_refusal_offers_stop_a_session_not_retry(client, alice, repo, settings):
    settings.BINDERY_MAX_SESSIONS_PER_USER = 0
    response = post_page(client, git_page(repo.url))
    assert response.status_code == 429
    shown = says_once(
        response,
        "You already run 0 sessions (your limit is 0). Stop one before starting another.",
        "QUOTA_EXCEEDED",
    )
    assert shown["title"] == "You are at your limit"
    assert failed_step(response) == ["waiting"]
    assert shown["links"] == [("/sessions/", "stop", "Stop a session")]
    assert not Session.objects.exists()


def test_a_team_quota_refusal_says_ask_the_team_admin(client, crew, git_host, settings):
    repo = git_host.create_repo(
        f"org/team-quota-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"}
    )
    Quota.objects.create(scope="team", team=crew.team, values={"sessions": 0})
    client.force_login(crew.member)
    response = post_page(client, git_page(repo.url), {"team": "ocean-lab"})
    assert response.status_code == 429
    shown = panel(response)
    assert ("/teams/ocean-lab/", "team", "Ask the team admin") in shown["links"]
    assert not Session.objects.exists()


def test_an_anonymous_refusal_offers_sign_in_keeping_the_link(client, git_host, settings):
    repo = git_host.create_repo(f"org/anon-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    settings.BINDERY_MAX_SESSIONS_ANONYMOUS = 0
    page = git_page(repo.url)
    response = post_page(client, page)
    assert response.status_code == 429
    shown = panel(response)
    sign_in = [link for link in shown["links"] if link[1] == "sign-in"]
    assert sign_in == [(f"/accounts/login/?next={quote(page, safe='')}", "sign-in", "Sign in")]
    assert not Session.objects.exists()


def test_the_script_gets_the_same_failure_as_json(client, alice):
    page = git_page("http://127.0.0.1:9/lab/demo.git")
    response = client.post(page, HTTP_ACCEPT="application/json", REQUEST_URI=page)
    body = response.json()
    assert response.status_code == 403 and body["error"] == "HOST_FORBIDDEN"
    failure = body["failure"]
    assert failure["code"] == "HOST_FORBIDDEN" and failure["step"] == "fetching"
    assert failure["message"] == body["detail"] and "HOST_FORBIDDEN" not in failure["message"]
    assert failure["actions"][0]["kind"] == "retry"


# --- failures after the launch started --------------------------------------------------------


def test_a_failed_build_is_said_once_with_a_link_to_the_build(client, alice, repo):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    message = "Installing the requirements failed: no version of nosuchpkg matches."
    fail_build(session.build_id, message, code="BUILD_DEPENDENCIES")
    services.start_sessions_waiting_for(session.build_id)
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    response = client.get(f"/sessions/{session.pk}/")
    assert response.status_code == 200
    shown = says_once(response, f"The build failed: {message}", "BUILD_DEPENDENCIES")
    assert shown["title"] == "The environment could not be built"
    assert failed_step(response) == ["building"]
    build_link = (f"/builds/{session.build_id}/", "build", "View the build and its log")
    assert build_link in shown["links"]
    assert shown["links"][0][1] == "retry"
    # the page does not follow a live launch any more: the script replays the log only
    config = json.loads(
        re.search(r'id="launch-config" type="application/json">(.*?)<', shown["html"]).group(1)
    )
    assert config["sessionId"] is None and config["logSessionId"] == session.pk


def test_a_server_that_did_not_start_is_said_once_at_launching(client, alice, repo):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    services.fail_session(
        session.pk, "The server did not become ready in time.", code="LAUNCH_TIMEOUT"
    )
    response = client.get(f"/sessions/{session.pk}/")
    shown = says_once(response, "The server did not become ready in time.", "LAUNCH_TIMEOUT")
    assert shown["title"] == "The server did not start"
    assert failed_step(response) == ["launching"]
    assert [kind for _, kind, _ in shown["links"]] == ["retry", "build"]


@pytest.mark.parametrize("code", ["K8S_FORBIDDEN", "K8S_UNAVAILABLE", "K8S_MISCONFIGURED"])
def test_a_cluster_refusing_the_sessions_volumes_is_said_at_launching(client, alice, repo, code):
    """The kubernetes session backend's errors (ClusterUnavailable: the claims are made as
    the server starts) fail the session, not its build: the launching step."""
    session = services.launch(alice, repo_url=repo.url, ref="main")
    message = "Bindery may not manage volumes on the cluster; an operator must check its access."
    services.fail_session(session.pk, message, code=code)
    response = client.get(f"/sessions/{session.pk}/")
    shown = says_once(response, message, code)
    assert shown["title"] == "The server did not start"
    assert failed_step(response) == ["launching"]


@pytest.mark.parametrize(
    "code", ["BUILD_POD_PENDING", "BUILD_POD_LOST", "REGISTRY_DENIED", "REGISTRY_UNAVAILABLE",
             "K8S_FORBIDDEN", "K8S_UNAVAILABLE", "K8S_REJECTED", "K8S_MISCONFIGURED"],
)  # fmt: skip
def test_a_kubernetes_build_failure_is_said_at_building(client, alice, repo, code):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    message = "The Kubernetes API refused to create a build pod in namespace bindery."
    fail_build(session.build_id, message, code=code)
    services.start_sessions_waiting_for(session.build_id)
    response = client.get(f"/sessions/{session.pk}/")
    shown = says_once(response, f"The build failed: {message}", code)
    assert shown["title"] == "The environment could not be built"
    assert failed_step(response) == ["building"]


@pytest.mark.parametrize(
    ("code", "step"),
    [("BUILD_POD_PENDING", "building"), ("REGISTRY_DENIED", "building"),
     ("REGISTRY_UNAVAILABLE", "building"), ("K8S_REJECTED", "building"),
     ("UNSUPPORTED_BY_BACKEND", "building"), ("K8S_FORBIDDEN", "launching"),
     ("K8S_UNAVAILABLE", "launching"), ("K8S_MISCONFIGURED", "launching")],
)  # fmt: skip
def test_kubernetes_codes_belong_to_their_step(code, step):
    """The builder's codes are building even where no failed build says so (a failure the
    page is given by code alone); the session side's K8S_* are launching."""
    from apps.sessions.failures import step_of

    assert step_of(code) == step
    assert step_of(code, build_failed=True) == "building"


def test_another_users_failed_session_is_404(client, alice, repo):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    services.fail_session(
        session.pk, "The server did not become ready in time.", code="LAUNCH_TIMEOUT"
    )
    client.force_login(UserFactory())
    assert client.get(f"/sessions/{session.pk}/").status_code == 404


# --- names, wording, team picker --------------------------------------------------------------


def test_the_launch_page_names_the_repository_for_people(client, alice, git_host):
    page = git_page(f"{git_host.base_url}/org/demo.git", "HEAD")
    html = client.get(page, REQUEST_URI=page).content.decode()
    assert f"{git_host.host}/org/demo" in html and "@</span> HEAD" in html
    assert f'title="{git_host.base_url}/org/demo.git · ref HEAD"' in html
    heading = html.split("<hgroup>", 1)[1].split("</hgroup>", 1)[0]
    assert "%3A" not in heading and "git/http" not in heading
    assert f"<title>Launch · {git_host.host}/org/demo @ HEAD · Bindery</title>" in html


def test_the_launch_log_names_the_repository_for_people(client, alice, repo):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    messages = list(session.events.values_list("message", flat=True))
    place = repo.url.split("//", 1)[1].removesuffix(".git")
    assert messages == [f"Waiting for the build of {place} @ main ({repo.head[:7]})."]
    # and the page says the same, full values on hover
    html = client.get(f"/sessions/{session.pk}/").content.decode()
    assert f'<span class="repo-place">{place}</span>' in html
    assert f"commit {repo.head}" in html


def test_the_team_picker_launches_for_the_team(client, crew, git_host):
    repo = git_host.create_repo(
        f"org/team-launch-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"}
    )
    client.force_login(crew.member)
    page = git_page(repo.url)
    html = client.get(page, REQUEST_URI=page).content.decode()
    assert '<select name="team" id="launch-team">' in html
    assert '<option value="ocean-lab" >Ocean Lab (team quota, shared volume)</option>' in html
    response = post_page(client, page, {"team": "ocean-lab"})
    session = Session.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/sessions/{session.pk}/"
    assert session.team == crew.team and session.user == crew.member
    assert (
        'for <a href="/teams/ocean-lab/">Ocean Lab</a>'
        in client.get(f"/sessions/{session.pk}/").content.decode()
    )


def test_an_outsider_cannot_launch_for_a_team(client, crew, git_host):
    repo = git_host.create_repo(
        f"org/team-outsider-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"}
    )
    client.force_login(crew.outsider)
    response = post_page(client, git_page(repo.url), {"team": "ocean-lab"})
    assert response.status_code == 404
    assert panel(response)["code"] == "Error code NOT_FOUND"
    assert not Session.objects.exists()
