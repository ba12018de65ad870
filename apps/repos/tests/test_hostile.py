"""Hostile specs, URLs and refs: each is refused with its stable code BEFORE anything runs.

For every case: the expected code, no process started (no git at all), no request reached
the real loopback git server (which is allowed and is where gh points, so an injected
option or ref *would* reach it), no outside HTTP request, and the marker file that the
injected commands try to create does not exist.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import responses

from apps.repos import services
from apps.repos.validation import parse_http_url, validate_ref
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db

MARK = "{marker}"  # replaced by a path under tmp_path
PORT = "{port}"  # replaced by the git server's port


def ref_cases():
    """(ref, code): refs given with a good repository."""
    return [
        (f"--upload-pack=touch {MARK}", "REF_INVALID"),
        (f"--output={MARK}", "REF_INVALID"),
        (f"-c core.sshCommand=touch {MARK}", "REF_INVALID"),
        ("-h", "REF_INVALID"),
        ("main..other", "REF_INVALID"),
        ("main@{1}", "REF_INVALID"),
        ("@", "REF_INVALID"),
        ("main~1", "REF_INVALID"),
        ("main^", "REF_INVALID"),
        ("HEAD^{tree}", "REF_INVALID"),
        ("a:b", "REF_INVALID"),
        ("ma?n", "REF_INVALID"),
        ("ma*n", "REF_INVALID"),
        ("ma[n", "REF_INVALID"),
        ("ma\\in", "REF_INVALID"),
        ("feature/.hidden", "REF_INVALID"),
        ("main.lock", "REF_INVALID"),
        ("/main", "REF_INVALID"),
        ("main/", "REF_INVALID"),
        ("a//b", "REF_INVALID"),
        ("main.", "REF_INVALID"),
        (f"$(touch {MARK})", "REF_INVALID"),
        (f"`touch {MARK}`", "REF_INVALID"),
        ("main with space", "REF_INVALID"),
        ("main\nother", "INPUT_CONTROL_CHARACTER"),
        ("main\x00", "INPUT_CONTROL_CHARACTER"),
        ("main\r", "INPUT_CONTROL_CHARACTER"),
        ("main\x1b[31m", "INPUT_CONTROL_CHARACTER"),
        ("m" * 300, "INPUT_TOO_LONG"),
    ]


def url_cases():
    """(pasted URL, code): what a person might paste into the launch form."""
    return [
        (f"ext::sh -c touch% {MARK}", "URL_SCHEME_FORBIDDEN"),
        (f"ext::sh -c touch% {MARK}/x", "URL_SCHEME_FORBIDDEN"),
        ("fd::17", "URL_SCHEME_FORBIDDEN"),
        ("file:///etc/passwd", "URL_SCHEME_FORBIDDEN"),
        ("file://localhost/tmp/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("FILE:///tmp/repo", "URL_SCHEME_FORBIDDEN"),
        ("/etc", "URL_LOCAL_PATH"),
        ("/tmp/repo.git", "URL_LOCAL_PATH"),
        ("../other-repo", "URL_LOCAL_PATH"),
        ("./repo", "URL_LOCAL_PATH"),
        ("~/repo", "URL_LOCAL_PATH"),
        ("..", "URL_LOCAL_PATH"),
        ("C:\\repos\\x", "URL_LOCAL_PATH"),
        ("git@github.com:org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("github.com:org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("ssh://git@github.com/org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("git+ssh://github.com/org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("git://github.com/org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("ftp://example.org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("javascript:alert(1)", "URL_SCHEME_FORBIDDEN"),
        (f"--upload-pack=touch {MARK}", "URL_INVALID"),
        ("-oProxyCommand=x", "URL_INVALID"),
        ("http://127.0.0.1/repo.git", "HOST_FORBIDDEN"),
        ("http://127.0.0.2:8080/repo.git", "HOST_FORBIDDEN"),
        (f"http://localhost:{PORT}/org/repo.git", "HOST_FORBIDDEN"),
        ("http://localhost/repo.git", "HOST_FORBIDDEN"),
        ("http://repo.localhost/x.git", "HOST_FORBIDDEN"),
        ("http://[::1]/repo.git", "HOST_FORBIDDEN"),
        (f"http://[::1]:{PORT}/org/repo.git", "HOST_FORBIDDEN"),
        ("http://10.0.0.1/repo.git", "HOST_FORBIDDEN"),
        ("http://172.16.5.4/repo.git", "HOST_FORBIDDEN"),
        ("http://192.168.1.1/repo.git", "HOST_FORBIDDEN"),
        ("http://100.64.0.1/repo.git", "HOST_FORBIDDEN"),
        ("http://169.254.169.254/latest/meta-data/", "HOST_FORBIDDEN"),
        ("http://[fe80::1]/repo.git", "HOST_FORBIDDEN"),
        ("http://[fd00::1]/repo.git", "HOST_FORBIDDEN"),
        ("http://0.0.0.0/repo.git", "HOST_FORBIDDEN"),
        ("http://[::]/repo.git", "HOST_FORBIDDEN"),
        ("http://224.0.0.1/repo.git", "HOST_FORBIDDEN"),
        ("http://[ff02::1]/repo.git", "HOST_FORBIDDEN"),
        ("http://255.255.255.255/repo.git", "HOST_FORBIDDEN"),
        ("http://0x7f000001/repo.git", "HOST_FORBIDDEN"),
        ("http://2130706433/repo.git", "HOST_FORBIDDEN"),
        ("http://0177.0.0.1/repo.git", "HOST_FORBIDDEN"),
        ("http://127.1/repo.git", "HOST_FORBIDDEN"),
        ("http://[::ffff:127.0.0.1]/repo.git", "HOST_FORBIDDEN"),
        ("http://[::ffff:7f00:1]/repo.git", "HOST_FORBIDDEN"),
        ("http://[::ffff:a00:1]/repo.git", "HOST_FORBIDDEN"),
        ("http://[::127.0.0.1]/repo.git", "HOST_FORBIDDEN"),
        ("http://[64:ff9b::a9fe:a9fe]/repo.git", "HOST_FORBIDDEN"),
        ("http://[2002:7f00:1::]/repo.git", "HOST_FORBIDDEN"),
        ("http://[fe80::1%25eth0]/repo.git", "URL_INVALID"),
        ("https://user:pw@github.com/org/repo", "URL_CREDENTIALS_FORBIDDEN"),
        ("https://ghp_secret@github.com/org/repo", "URL_CREDENTIALS_FORBIDDEN"),
        (f"http://127.0.0.1:{PORT}@evil.example/repo.git", "URL_CREDENTIALS_FORBIDDEN"),
        ("http://evil.example#@127.0.0.1/repo.git", "URL_INVALID"),
        ("http:/\\127.0.0.1/repo.git", "URL_INVALID"),
        ("https://example.org:99999/repo.git", "URL_INVALID"),
        ("https://exa mple.org/repo.git", "URL_INVALID"),
        ("https://github.com/org/repo\n", "INPUT_CONTROL_CHARACTER"),
        ("https://github.com/org/\nrepo", "INPUT_CONTROL_CHARACTER"),
        ("https://github.com/org/repo\x00.git", "INPUT_CONTROL_CHARACTER"),
        ("https://github.com/org/repo\u2028", "INPUT_CONTROL_CHARACTER"),
        ("https://example.org/" + "a" * 5000, "INPUT_TOO_LONG"),
    ]


def spec_cases():
    """(provider, spec, code): specs as they arrive in /v2/<provider>/<spec> links."""
    return [
        ("git", quote(f"ext::sh -c touch% {MARK}", safe="") + "/main", "URL_SCHEME_FORBIDDEN"),
        ("git", quote("file:///tmp/repo", safe="") + "/main", "URL_SCHEME_FORBIDDEN"),
        ("git", quote("/etc", safe="") + "/main", "URL_LOCAL_PATH"),
        ("git", quote("git@host:x", safe="") + "/main", "URL_SCHEME_FORBIDDEN"),
        ("git", quote("http://169.254.169.254/x", safe="") + "/main", "HOST_FORBIDDEN"),
        (
            "git",
            quote(f"http://localhost:{PORT}/org/repo.git", safe="") + "/main",
            "HOST_FORBIDDEN",
        ),
        ("git", quote("https://a:b@github.com/x", safe="") + "/main", "URL_CREDENTIALS_FORBIDDEN"),
        ("git", quote(f"http://127.0.0.1:{PORT}/org/../x.git", safe="") + "/main", "URL_INVALID"),
        ("git", quote(f"http://127.0.0.1:{PORT}/x.git?a=b", safe="") + "/main", "URL_INVALID"),
        (
            "git",
            quote(f"http://127.0.0.1:{PORT}/org/repo.git", safe="") + "/--upload-pack=x",
            "REF_INVALID",
        ),
        (
            "git",
            quote(f"http://127.0.0.1:{PORT}/org/repo.git", safe="") + "/main%0Aevil",
            "INPUT_CONTROL_CHARACTER",
        ),
        ("gh", f"org/repo/--upload-pack=touch {MARK}", "REF_INVALID"),
        ("gh", "org/repo/-", "REF_INVALID"),
        ("gh", "../../etc/passwd", "SPEC_INVALID"),
        ("gh", "-org/repo/main", "SPEC_INVALID"),
        ("gh", "org/re%0apo/main", "SPEC_INVALID"),
        ("gh", "org/..", "SPEC_INVALID"),
        ("gh", "org/repo/main\n", "INPUT_CONTROL_CHARACTER"),
        ("gh", "o/" + "r" * 3000 + "/main", "INPUT_TOO_LONG"),
        ("gl", "..%2F..%2Fetc/main", "SPEC_INVALID"),
        ("gl", "group%2Fproj/--upload-pack%3Dx", "REF_INVALID"),
        ("gl", "group%2F-proj/main", "SPEC_INVALID"),
        ("gl", "group%0A%2Fproj/main", "INPUT_CONTROL_CHARACTER"),
        ("gist", "user/../x", "SPEC_INVALID"),
        ("gist", "user/abc123/--output=x", "REF_INVALID"),
        ("dataverse", "http://10.0.0.1/dataset.xhtml?persistentId=doi:10.1234/X", "HOST_FORBIDDEN"),
        ("ckan", "http://169.254.169.254/dataset/x", "HOST_FORBIDDEN"),
        ("ckan", quote("http://localhost/dataset/x", safe=""), "HOST_FORBIDDEN"),
        ("ckan", "file:///etc/dataset/x", "URL_SCHEME_FORBIDDEN"),
        ("swhid", "swh:1:dir:../../etc", "SPEC_INVALID"),
        ("zenodo", "10.5281/../../x", "SPEC_INVALID"),
        ("hydroshare", "../../etc/passwd", "SPEC_INVALID"),
        ("../gh", "org/repo/main", "PROVIDER_UNKNOWN"),
    ]


def _fill(text, marker, port):
    for placeholder, value in ((MARK, str(marker)), (PORT, str(port))):
        text = text.replace(placeholder, value)
        text = text.replace(quote(placeholder, safe=""), quote(value, safe=""))
    return text


@pytest.fixture
def armed(hosted_on_git_server, provider_urls_on_server, tmp_path, processes):
    """The server is allowed and really holds org/repo; nothing outside is reachable."""
    server = hosted_on_git_server
    if not (server.root / "repos" / "org" / "repo.git").exists():
        server.create_repo("org/repo", {"a": "b"})
    marker = tmp_path / "MARKER"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as outside:
        before = len(server.requests)
        processes.clear()
        yield server, marker
        assert len(outside.calls) == 0
    assert len(server.requests) == before, server.requests[before:]
    assert processes == []
    assert not marker.exists()


@pytest.fixture
def provider_urls_on_server(hosted_on_git_server, settings):
    settings.BINDERY_PROVIDER_URLS = {
        **settings.BINDERY_PROVIDER_URLS,
        "gl": "https://gitlab.com",
        "gist": "https://gist.github.com",
    }


def expect_refused(call, code):
    with pytest.raises(BinderyError) as caught:
        call()
    assert caught.value.code == code, (caught.value.code, caught.value.message)
    assert caught.value.message and caught.value.message[-1] in ".?!"
    assert 400 <= caught.value.status < 500


def test_there_are_at_least_forty_hostile_cases():
    assert len(ref_cases()) + len(url_cases()) + len(spec_cases()) >= 40


@pytest.mark.parametrize("ref,code", ref_cases(), ids=lambda v: repr(v)[:40])
def test_hostile_ref_in_gh_spec(armed, ref, code):
    server, marker = armed
    ref = _fill(ref, marker, server.port)
    expect_refused(lambda: services.resolve("gh", f"org/repo/{ref}", None), code)


@pytest.mark.parametrize("ref,code", ref_cases(), ids=lambda v: repr(v)[:40])
def test_hostile_ref_with_a_pasted_url(armed, ref, code):
    server, marker = armed
    ref = _fill(ref, marker, server.port)
    url = f"{server.base_url}/org/repo"
    expect_refused(lambda: services.resolve_url(url, ref, None), code)


@pytest.mark.parametrize("url,code", url_cases(), ids=lambda v: repr(v)[:40])
def test_hostile_pasted_url(armed, url, code):
    server, marker = armed
    url = _fill(url, marker, server.port)
    expect_refused(lambda: services.resolve_url(url, "main", None), code)


@pytest.mark.parametrize("provider,spec,code", spec_cases(), ids=lambda v: repr(v)[:40])
def test_hostile_spec(armed, provider, spec, code):
    server, marker = armed
    spec = _fill(spec, marker, server.port)
    expect_refused(lambda: services.resolve(provider, spec, None), code)


def test_the_same_server_is_reached_when_input_is_fine(hosted_on_git_server, processes):
    # The control: the armed checks above would notice a request and a process.
    server = hosted_on_git_server
    if not (server.root / "repos" / "org" / "repo.git").exists():
        server.create_repo("org/repo", {"a": "b"})
    before = len(server.requests)
    services.resolve("gh", "org/repo/main", None)
    assert len(server.requests) > before
    assert any(args[0] == "git" for args in processes)


@pytest.mark.parametrize(
    "ref",
    ["main", "feature/x", "v1.2.3", "HEAD", "refs/heads/main", "a" * 40, "release-2024_01", "@x"],
)
def test_good_refs_pass(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/repo",
        "https://git.example.org:8443/group/repo.git",
        "http://[2001:4860:4860::8888]/repo.git",
        "https://xn--bcher-kva.example/repo.git",
    ],
)
def test_good_urls_parse(url):
    assert parse_http_url(url).url == url
