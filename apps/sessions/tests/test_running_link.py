"""One running session per repository and ref, from outside links too: a /v2/ link (a badge)
to a repository and ref the visitor already runs shows that session — Open (at the link's
path) or Start another — and starts nothing until "Start another" (``another=1``), which
really starts a second one. Through the real views, a real git server for the launches."""

from __future__ import annotations

import html as htmllib
import json
import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from apps.accounts.tests.factories import UserFactory
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.owners import SESSION_KEY
from portal import crypto

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client):
    user = UserFactory(username="alice")
    client.force_login(user)
    return user


@pytest.fixture
def repo(git_host: Any) -> Any:
    return git_host.create_repo(f"org/ocean-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})


def link_to(repo: Any, query: str = "") -> str:
    return f"/v2/git/{quote(repo.url, safe='')}/main" + (f"?{query}" if query else "")


def get(client: Client, page: str, site: str = "cross-site") -> Any:
    # REQUEST_URI: the undecoded path, as a WSGI server passes it (git specs need it)
    return client.get(page, HTTP_SEC_FETCH_SITE=site, REQUEST_URI=page.split("?")[0])


def post(client: Client, page: str, data: dict[str, str] | None = None, *, script: bool = True):
    accept = "application/json" if script else "text/html"
    return client.post(page, data or {}, HTTP_ACCEPT=accept, REQUEST_URI=page.split("?")[0])


def config_of(response: Any) -> dict[str, Any]:
    found = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>',
                      response.content.decode(), re.S)  # fmt: skip
    assert found
    return json.loads(found.group(1))


def running_section(response: Any) -> str:
    found = re.search(r'<section id="launch-running">(.*?)</section>', response.content.decode(),
                      re.S)  # fmt: skip
    assert found, response.content.decode()
    return found.group(1)


def ready(session: Session) -> Session:
    """The session as a finished launch leaves it: ready, with its URL and token."""
    session.status = Session.Status.READY
    session.url = services.session_url(session)
    session.token_encrypted = crypto.encrypt("server-token")
    session.save(update_fields=["status", "url", "token_encrypted"])
    return session


def test_a_link_to_a_repository_already_running_offers_it_and_starts_nothing(client, alice, repo):
    session = ready(services.launch(alice, repo_url=repo.url, ref="main"))
    response = get(client, link_to(repo))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="launch-confirm"' not in html  # not the "Launch this repository?" form
    assert "<h1>Already running</h1>" in html
    assert config_of(response)["autostart"] is False
    section = running_section(response)
    assert f'<a href="/sessions/{session.pk}/">session #{session.pk}</a>' in section
    assert ">Ready</span>" in section
    assert "share your files in <code>persistent/</code>" in section
    assert f'<a href="/sessions/{session.pk}/open/" role="button" id="running-open">Open</a>' in (
        section
    )
    # Start another: this very link, posted with another=1
    form = re.search(r'<form method="post" action="([^"]+)" id="launch-form"', section)
    assert form is not None and htmllib.unescape(form.group(1)) == link_to(repo)
    assert '<input type="hidden" name="another" value="1">' in section
    assert re.search(r'<button type="submit" id="launch-button"[^>]*>Start another</button>',
                     section)  # fmt: skip
    assert Session.objects.count() == 1


def test_the_portals_own_click_does_not_start_a_second_one_either(client, alice, repo):
    services.launch(alice, repo_url=repo.url, ref="main")
    response = get(client, link_to(repo), site="same-origin")
    assert config_of(response)["autostart"] is False
    assert "<h1>Already running</h1>" in response.content.decode()
    assert Session.objects.count() == 1


def test_one_on_its_way_up_is_offered_to_watch(client, alice, repo):
    building = services.launch(alice, repo_url=repo.url, ref="main")
    assert building.status == Session.Status.BUILDING
    section = running_section(get(client, link_to(repo, "labpath=a.ipynb")))
    assert ">Building</span>" in section
    assert "It is on its way up: watch its launch" in section
    assert "opens <code>" not in section  # the link's path cannot be honoured before it runs
    assert (
        f'<a href="/sessions/{building.pk}/" role="button" id="running-open">Watch its launch</a>'
    ) in section


def test_open_goes_to_the_links_path_in_the_running_session(client, alice, repo):
    session = ready(services.launch(alice, repo_url=repo.url, ref="main", urlpath="lab"))
    section = running_section(get(client, link_to(repo, "labpath=notebooks/b.ipynb")))
    opener = re.search(r'<a href="([^"]+)" role="button" id="running-open">Open</a>', section)
    assert opener is not None
    target = htmllib.unescape(opener.group(1))
    assert target == f"/sessions/{session.pk}/open/?urlpath=lab%2Ftree%2Fnotebooks%2Fb.ipynb"
    assert "opens <code>lab/tree/notebooks/b.ipynb</code>" in section

    # the click, from this page: the server at the link's path, with the session's token
    opened = client.get(target, HTTP_SEC_FETCH_SITE="same-origin")
    assert opened.status_code == 302
    base = session.url.removesuffix("lab")
    assert opened["Location"] == f"{base}lab/tree/notebooks/b.ipynb?token=server-token"
    # from another site the path is not a stranger's to choose: the session's own
    elsewhere = client.get(target, HTTP_SEC_FETCH_SITE="cross-site")
    assert elsewhere["Location"] == f"{session.url}?token=server-token"
    # a path out of the server is refused, as at launch
    escape = f"/sessions/{session.pk}/open/?urlpath=%2e%2e/%2e%2e/user/x/y/"
    assert client.get(escape, HTTP_SEC_FETCH_SITE="same-origin").status_code == 400


def test_a_launch_without_another_is_refused_with_the_running_one(client, alice, repo):
    session = services.launch(alice, repo_url=repo.url, ref="main")
    scripted = post(client, link_to(repo))
    assert scripted.status_code == 409
    body = scripted.json()
    assert body["error"] == "SESSION_ALREADY_RUNNING"
    assert body["running"]["id"] == session.pk
    assert body["running"]["page"] == f"/sessions/{session.pk}/"
    # the form without script comes back to the page, which offers the running one
    plain = post(client, link_to(repo), script=False)
    assert plain.status_code == 302 and plain["Location"] == link_to(repo)
    assert Session.objects.count() == 1


def test_start_another_really_starts_a_second_one(client, alice, repo):
    first = services.launch(alice, repo_url=repo.url, ref="main")
    # the button: the same form, another=1
    response = post(client, link_to(repo, "labpath=a.ipynb"), {"another": "1"})
    assert response.status_code == 200
    second = Session.objects.get(pk=response.json()["session"])
    assert second.pk != first.pk
    assert (second.user, second.provider, second.spec) == (alice, first.provider, first.spec)
    assert second.urlpath == "lab/tree/a.ipynb"
    # another=1 in the query (the home page's Start another) starts a third, after the click
    page = link_to(repo, "another=1")
    assert config_of(get(client, page, site="cross-site"))["autostart"] is False
    shown = get(client, page, site="same-origin")
    assert 'id="launch-running"' not in shown.content.decode()
    assert config_of(shown)["autostart"] is True
    assert post(client, page).status_code == 200
    assert Session.objects.filter(user=alice).count() == 3


def test_another_ref_or_an_ended_session_is_launched_as_usual(client, alice, repo):
    services.request_stop(services.launch(alice, repo_url=repo.url, ref="main"))
    response = get(client, link_to(repo))
    assert 'id="launch-confirm"' in response.content.decode()
    assert 'id="launch-running"' not in response.content.decode()
    services.launch(alice, repo_url=repo.url, ref="main")
    other_ref = f"/v2/git/{quote(repo.url, safe='')}/{repo.head}"
    assert 'id="launch-confirm"' in get(client, other_ref).content.decode()


def test_a_team_session_is_offered_for_the_team_link_only(client, crew, git_host):
    repo = git_host.create_repo(f"org/team-{uuid.uuid4().hex[:8]}", {"requirements.txt": "\n"})
    client.force_login(crew.member)
    session = services.launch(crew.member, repo_url=repo.url, ref="main", team=crew.team)
    assert 'id="launch-confirm"' in get(client, link_to(repo)).content.decode()
    section = running_section(get(client, link_to(repo, "team=ocean-lab")))
    assert f"session #{session.pk}" in section
    # Start another launches for the same team
    assert '<input type="hidden" name="team" value="ocean-lab">' in section
    # a team one is not in: the form as usual (its launch refuses the team)
    client.force_login(crew.outsider)
    assert 'id="launch-confirm"' in get(client, link_to(repo, "team=ocean-lab")).content.decode()


def test_another_users_session_is_not_offered(client, alice, repo):
    other = UserFactory()
    ready(services.launch(other, repo_url=repo.url, ref="main"))
    response = get(client, link_to(repo))
    assert 'id="launch-running"' not in response.content.decode()
    assert 'id="launch-confirm"' in response.content.decode()


def test_an_anonymous_visitor_is_offered_their_own_session_only(client, repo, settings):
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    settings.BINDERY_MAX_SESSIONS_ANONYMOUS = 2
    launched = post(client, link_to(repo))
    assert launched.status_code == 200
    session = Session.objects.get()
    assert session.user is None and session.anonymous_owner == client.session[SESSION_KEY]
    section = running_section(get(client, link_to(repo)))
    assert f"session #{session.pk}" in section
    assert "persistent/" not in section  # an anonymous session has no volume to share
    assert post(client, link_to(repo)).status_code == 409
    # a stranger's browser sees the form, not this visitor's session
    stranger = Client()
    assert 'id="launch-confirm"' in get(stranger, link_to(repo)).content.decode()
    assert post(client, link_to(repo), {"another": "1"}).status_code == 200
    assert Session.objects.count() == 2
