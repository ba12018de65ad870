"""A shared /v2/ link opened signed out launches the same after a detour through signing in
or signing up (with the emailed verification link) as it would have signed in: the
``next`` keeps the link exactly as it came, still percent-encoded, through every page.

The pages are the real ones (allauth's login, sign-up and confirmation views, the /v2/ page)
through Django's test client, which passes the undecoded path the way a WSGI server does
(REQUEST_URI). gh and gl are served by the real git server on 127.0.0.1; Zenodo is replayed
from the recordings of apps/repos/tests.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import responses
from django.conf import settings as django_settings
from django.core import mail
from django.test import AsyncClient, Client

from apps.accounts.models import User
from apps.accounts.tests.factories import PASSWORD, UserFactory
from apps.builds.models import Build
from apps.repos.tests.conftest import (  # noqa: F401  (fixtures)
    provider_urls,
    recorded_dns,
    recorded_json,
)
from apps.sessions.models import Session

pytestmark = pytest.mark.django_db

ZENODO_API = "https://zenodo.org/api/records/3242074"


class RawPathClient(Client):
    """The test client, plus the request line's undecoded path and query in REQUEST_URI,
    as uWSGI and Apache pass it (Django's own client sends only the decoded PATH_INFO)."""

    def generic(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("REQUEST_URI", path)
        return super().generic(method, path, *args, **kwargs)


class DaphneLikeClient(AsyncClient):
    """The async test client, plus the raw path in the ASGI scope, as daphne sends it."""

    def generic(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._raw_path = urlsplit(path).path.encode()
        return super().generic(method, path, *args, **kwargs)

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)  # type: ignore[misc]
        scope["raw_path"] = self._raw_path
        return scope


@dataclass
class Link:
    link: str  # as shared: /v2/<provider>/<spec>[?query]
    provider: str
    spec: str  # as stored on the session: still encoded
    shown: str  # the repository as the page names it
    repo_url: str
    ref: str
    sha: str
    urlpath: str


@pytest.fixture
def hosts(git_host: Any, settings: Any) -> Any:
    """gh and gl served by the loopback git server (whose host:port git_host allows)."""
    settings.BINDERY_PROVIDER_URLS = {
        **django_settings.BINDERY_DEFAULT_PROVIDER_URLS,
        "gh": git_host.base_url,
        "gl": git_host.base_url,
    }
    settings.BINDERY_BANNED_SPECS = {}
    settings.BINDERY_ALLOWED_SPECS = {}
    return git_host


@pytest.fixture
def adapter(settings: Any) -> None:
    # The project's account adapter: portal/settings.py is to name it (ACCOUNT_ADAPTER); set
    # here so these tests hold whatever the settings say.
    settings.ACCOUNT_ADAPTER = "apps.accounts.adapters.AccountAdapter"


def make_link(hosts: Any, shape: str) -> Link:
    name = f"l{uuid.uuid4().hex[:10]}"
    files = {"requirements.txt": "\n", "a.ipynb": "{}"}
    if shape == "gh":
        repo = hosts.create_repo(f"org/{name}", files)
        spec = f"org/{name}/main"
        return Link(f"/v2/gh/{spec}?urlpath=lab/tree/a.ipynb", "gh", spec,
                    f"{hosts.host}/org/{name} @ main", f"{hosts.base_url}/org/{name}", "main",
                    repo.head, "lab/tree/a.ipynb")  # fmt: skip
    if shape == "gl":  # a project in a subgroup, its path url-escaped as mybinder wants
        repo = hosts.create_repo(f"group/sub/{name}", files)
        spec = f"group%2Fsub%2F{name}/main"
        return Link(f"/v2/gl/{spec}?filepath=a.ipynb", "gl", spec,
                    f"{hosts.host}/group/sub/{name} @ main",
                    f"{hosts.base_url}/group/sub/{name}.git",
                    "main", repo.head, "lab/tree/a.ipynb")  # fmt: skip
    # git: an encoded http:// clone URL and a ref with a slash
    repo = hosts.create_repo(f"org/{name}", files)
    sha = hosts.commit(repo, {"b.ipynb": "{}"}, branch="feature/x")
    spec = f"{quote(repo.url, safe='')}/feature/x"
    return Link(f"/v2/git/{spec}?labpath=b.ipynb", "git", spec,
                f"{hosts.host}/org/{name} @ feature/x",
                repo.url, "feature/x", sha, "lab/tree/b.ipynb")  # fmt: skip


def next_of(url: str) -> str:
    [value] = parse_qs(urlsplit(url).query)["next"]
    return value


def config_of(response: Any) -> dict[str, Any]:
    found = re.search(r'<script id="launch-config" type="application/json">(.*?)</script>',
                      response.content.decode(), re.S)  # fmt: skip
    assert found, response.content.decode()
    return json.loads(found.group(1))


def signup_links(response: Any) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="(/accounts/signup/[^"]*)"',
                                                 response.content.decode())]  # fmt: skip


def come_back_signed_out(client: Client, link: str) -> str:
    """Open the link signed out, from another site: the login page's address."""
    response = client.get(link, HTTP_SEC_FETCH_SITE="cross-site")
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == "/accounts/login/"
    assert next_of(response["Location"]) == link
    return response["Location"]


def launch_from_the_page(client: Client, case: Link, user: User, referer: str) -> Session:
    """The /v2/ page after the sign-in redirect: it asks, names the repository, and its
    Launch (the script's POST to this very address) starts a session of that repository."""
    page = client.get(case.link, HTTP_SEC_FETCH_SITE="same-origin",
                      HTTP_REFERER=f"http://testserver{referer}")  # fmt: skip
    assert page.status_code == 200
    config = config_of(page)
    assert config["autostart"] is False  # the sign-in page bounced here: no click yet
    text = page.content.decode()
    assert '<section id="launch-confirm" >' in text or '<section id="launch-confirm">' in text
    # named for people (host/owner/repo @ ref), never as the encoded spec
    found = re.search(r"<p>Repository: (.*?)(?: · opens .*)?</p>", text, re.S)
    assert found is not None
    heading = found.group(1)
    assert " ".join(html.unescape(re.sub(r"<[^>]+>", "", heading)).split()) == case.shown
    assert '<button type="submit" id="launch-button">Launch</button>' in text
    assert not Session.objects.exists() and not Build.objects.exists()
    # launch.js posts to location.pathname + the query it was given
    target = urlsplit(case.link).path + "?" + config["query"]
    response = client.post(target, HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    session = Session.objects.select_related("build").get(pk=response.json()["session"])
    assert response.json()["websocket"] == f"/ws/launches/{session.pk}/"
    assert session.user == user
    assert (session.provider, session.spec) == (case.provider, case.spec)
    assert session.urlpath == case.urlpath
    assert session.build.repo_url == case.repo_url
    assert session.build.resolved_ref == case.sha
    assert session.build.resolved["unresolved_ref"] == case.ref
    return session


@pytest.mark.parametrize("shape", ["gh", "gl", "git"])
def test_a_signed_out_link_launches_after_signing_in(hosts, adapter, shape):
    case = make_link(hosts, shape)
    user = UserFactory()
    client = RawPathClient()
    login = come_back_signed_out(client, case.link)
    page = client.get(login)
    assert page.status_code == 200
    text = page.content.decode()
    assert f'<input type="hidden" name="next" value="{html.escape(case.link)}">' in text
    # the header's "Sign up" and the page's own "sign up" both keep where to go
    links = signup_links(page)
    assert len(links) == 2 and all(next_of(link) == case.link for link in links)
    response = client.post(login, {"login": user.email, "password": PASSWORD,
                                   "next": case.link})  # fmt: skip
    assert response.status_code == 302
    assert response["Location"] == case.link
    launch_from_the_page(client, case, user, referer=login)


@pytest.mark.parametrize("shape", ["gl", "git"])
def test_a_signed_out_link_launches_after_signing_up_and_verifying(hosts, adapter, shape):
    """Same browser: the confirmation signs the new person in and goes on to the link."""
    case = make_link(hosts, shape)
    client = RawPathClient()
    login = come_back_signed_out(client, case.link)
    [signup, _] = signup_links(client.get(login))
    form = client.get(signup)
    assert form.status_code == 200
    assert f'name="next" value="{html.escape(case.link)}"' in form.content.decode()
    email = f"{uuid.uuid4().hex[:8]}@example.org"
    response = client.post(signup, {"email": email, "password1": PASSWORD, "password2": PASSWORD,
                                    "next": case.link})  # fmt: skip
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == "/accounts/confirm-email/"
    user = User.objects.get(email=email)
    assert client.get(case.link).status_code == 302  # not signed in before verifying
    [message] = mail.outbox
    found = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+)", message.body)
    assert found, message.body
    confirm = found.group(1)
    assert next_of(confirm) == case.link
    shown = client.get(confirm)
    assert shown.status_code == 200
    assert f'name="next" value="{html.escape(case.link)}"' in shown.content.decode()
    response = client.post(confirm, {"next": case.link})
    assert response.status_code == 302
    assert response["Location"] == case.link
    assert user.emailaddress_set.get().verified
    launch_from_the_page(client, case, user, referer=confirm)


def test_verifying_in_another_browser_then_signing_in_keeps_the_link(hosts, adapter):
    """The sign-up's session is not where the email is opened: the link in the email still
    leads, through the login, to the launch."""
    case = make_link(hosts, "git")
    first = RawPathClient()
    login = come_back_signed_out(first, case.link)
    [signup, _] = signup_links(first.get(login))
    email = f"{uuid.uuid4().hex[:8]}@example.org"
    first.post(signup, {"email": email, "password1": PASSWORD, "password2": PASSWORD,
                        "next": case.link})  # fmt: skip
    found = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+)", mail.outbox[0].body)
    assert found
    other = RawPathClient()
    response = other.post(found.group(1), {"next": next_of(found.group(1))})
    assert response.status_code == 302
    assert response["Location"] == case.link
    user = User.objects.get(email=email)
    assert user.emailaddress_set.get().verified
    login = come_back_signed_out(other, case.link)  # verified, not signed in here
    response = other.post(login, {"login": email, "password": PASSWORD, "next": case.link})
    assert response.status_code == 302 and response["Location"] == case.link
    launch_from_the_page(other, case, user, referer=login)


@pytest.mark.parametrize("unsafe", ["//evil.example/v2/gh/a/b/main", "https://evil.example/",
                                    "/\\evil.example", "http://testserver/v2/gh/a/b/main",
                                    "javascript:alert(1)", "/v2/gh/a/b/main\n"])  # fmt: skip
def test_only_a_path_on_this_site_is_kept(adapter, unsafe):
    user = UserFactory()
    client = Client()
    login = "/accounts/login/?" + f"next={quote(unsafe, safe='')}"
    page = client.get(login)
    assert page.status_code == 200
    assert all("next=" not in link for link in signup_links(page))
    response = client.post(login, {"login": user.email, "password": PASSWORD, "next": unsafe})
    assert response.status_code == 302
    assert response["Location"] == "/"  # LOGIN_REDIRECT_URL


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_sign_in_keeps_the_raw_link(hosts):
    from asgiref.sync import sync_to_async

    for shape in ("gl", "git"):
        case = await sync_to_async(make_link)(hosts, shape)
        response = await DaphneLikeClient().get(case.link, headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 302
        assert urlsplit(response["Location"]).path == "/accounts/login/"
        assert next_of(response["Location"]) == case.link
    assert await Session.objects.acount() == 0


def test_the_sign_in_links_of_an_anonymous_launch_page_come_back_to_it(hosts, settings):
    settings.BINDERY_ANONYMOUS_LAUNCH = True
    case = make_link(hosts, "gl")
    page = RawPathClient().get(case.link, HTTP_SEC_FETCH_SITE="cross-site")
    assert page.status_code == 200
    text = page.content.decode()
    [sign_in] = re.findall(r'href="(/accounts/login/[^"]*)"', text)
    assert next_of(html.unescape(sign_in)) == case.link
    [sign_up] = signup_links(page)
    assert next_of(sign_up) == case.link


def test_the_portals_own_launch_form_still_starts_at_once(hosts):
    case = make_link(hosts, "git")
    client = RawPathClient()
    client.force_login(UserFactory())
    own = client.get(case.link, HTTP_SEC_FETCH_SITE="same-origin",
                     HTTP_REFERER="http://testserver/")  # fmt: skip
    assert own.status_code == 200 and config_of(own)["autostart"] is True
    bounced = client.get(case.link, HTTP_SEC_FETCH_SITE="same-origin",
                         HTTP_REFERER="http://testserver/accounts/login/?next=/x")  # fmt: skip
    assert bounced.status_code == 200 and config_of(bounced)["autostart"] is False
    assert not Session.objects.exists()


def test_a_zenodo_doi_link_launches_after_signing_in(adapter, provider_urls, recorded_dns):  # noqa: F811
    """A DOI with a slash in it; the record is replayed from the recordings."""
    user = UserFactory()
    link = "/v2/zenodo/10.5281/zenodo.3242074"
    case = Link(link, "zenodo", "10.5281/zenodo.3242074", "zenodo 10.5281/zenodo.3242074",
                "https://zenodo.org/records/3242074", "", "3242074", "")  # fmt: skip
    client = RawPathClient()
    login = come_back_signed_out(client, link)
    response = client.post(login, {"login": user.email, "password": PASSWORD, "next": link})
    assert response["Location"] == link
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        for url, location, status in [
            ("https://doi.org/10.5281/zenodo.3242074",
             "https://zenodo.org/doi/10.5281/zenodo.3242074", 302),
            ("https://zenodo.org/doi/10.5281/zenodo.3242074", "/records/3242074", 301),
        ]:  # fmt: skip
            mock.add(responses.GET, url, status=status, headers={"Location": location})
        mock.add(responses.GET, ZENODO_API, json=recorded_json("zenodo_record_3242074"))
        mock.add(responses.GET, f"{ZENODO_API}/files",
                 json=recorded_json("zenodo_files_3242074"))  # fmt: skip
        launch_from_the_page(client, case, user, referer=login)
