"""gh, gl, gist and git specs resolved with git ls-remote against the real git smart-HTTP
server on 127.0.0.1 (apps/repos/tests/gitserver.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from apps.repos import services
from apps.repos.tests.gitserver import _git
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(hosted_on_git_server, unique):
    """org/<name> with: main (2 commits), a branch feature/x, a branch release/main (a
    trap for tail-matching), a lightweight tag v1 and an annotated tag v2."""
    server = hosted_on_git_server
    name = unique("proj")
    repo = server.create_repo(f"org/{name}", {"requirements.txt": "numpy\n"})
    first = repo.head
    server.commit(repo, {"a.txt": "feature"}, branch="feature/x")
    server.commit(repo, {"b.txt": "trap"}, branch="release/main")
    main = server.commit(repo, {"c.txt": "main"}, branch="main", tag="v1")
    _git(repo.work, "tag", "-a", "v2", "-m", "annotated", first)
    _git(repo.work, "push", "-q", "origin", "refs/tags/v2")
    refs = {
        "first": first,
        "main": main,
        "feature/x": _git(repo.work, "rev-parse", "feature/x").strip(),
        "release/main": _git(repo.work, "rev-parse", "release/main").strip(),
        "v2-tag-object": _git(repo.work, "rev-parse", "v2").strip(),
    }
    return server, name, refs


def test_gh_branch_resolves_to_its_commit(repo):
    server, name, refs = repo
    resolved = services.resolve("gh", f"org/{name}/main", None)
    assert resolved.resolved_ref == refs["main"]
    assert resolved.kind == "git"
    assert resolved.provider == "gh"
    assert resolved.spec == f"org/{name}/main"
    assert resolved.unresolved_ref == "main"
    assert resolved.repo_url == f"{server.base_url}/org/{name}"
    assert resolved.persistent_spec == f"gh/org/{name}/{refs['main']}"
    assert resolved.ref_url == f"{server.base_url}/org/{name}/tree/{refs['main']}"
    assert resolved.host == server.host
    assert resolved.display_name == f"org/{name}"
    assert resolved.credential_id is None and not resolved.is_private


def test_gh_exact_branch_wins_over_tail_match(repo):
    # `git ls-remote <url> main` would also list refs/heads/release/main.
    _, name, refs = repo
    assert services.resolve("gh", f"org/{name}/main", None).resolved_ref == refs["main"]
    assert (
        services.resolve("gh", f"org/{name}/release/main", None).resolved_ref
        == (refs["release/main"])
    )


def test_gh_ref_containing_slash(repo):
    _, name, refs = repo
    resolved = services.resolve("gh", f"org/{name}/feature/x", None)
    assert resolved.resolved_ref == refs["feature/x"]
    assert resolved.unresolved_ref == "feature/x"


def test_gh_lightweight_tag(repo):
    _, name, refs = repo
    assert services.resolve("gh", f"org/{name}/v1", None).resolved_ref == refs["main"]


def test_gh_annotated_tag_is_peeled_to_its_commit(repo):
    _, name, refs = repo
    resolved = services.resolve("gh", f"org/{name}/v2", None)
    assert resolved.resolved_ref == refs["first"]
    assert resolved.resolved_ref != refs["v2-tag-object"]


def test_gh_full_ref_name_and_head(repo):
    _, name, refs = repo
    assert (
        services.resolve("gh", f"org/{name}/refs/heads/main", None).resolved_ref == (refs["main"])
    )
    assert services.resolve("gh", f"org/{name}/HEAD", None).resolved_ref == refs["main"]


def test_gh_sha_is_used_as_given(repo):
    _, name, refs = repo
    resolved = services.resolve("gh", f"org/{name}/{refs['first'].upper()}", None)
    assert resolved.resolved_ref == refs["first"]
    assert resolved.persistent_spec == f"gh/org/{name}/{refs['first']}"


def test_gh_dot_git_suffix_is_dropped(repo):
    _, name, refs = repo
    resolved = services.resolve("gh", f"org/{name}.git/main", None)
    assert resolved.display_name == f"org/{name}"
    assert resolved.resolved_ref == refs["main"]


def test_gh_unknown_ref_has_clear_code(repo):
    _, name, _ = repo
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"org/{name}/no-such-branch", None)
    assert caught.value.code == "REF_NOT_FOUND"
    assert caught.value.status == 404
    assert "no-such-branch" in caught.value.message


def test_gh_unknown_repository_has_clear_code(hosted_on_git_server):
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", "org/does-not-exist/main", None)
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    assert caught.value.status == 404


def test_gh_without_ref_suggests_head(hosted_on_git_server):
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", "org/repo", None)
    assert caught.value.code == "SPEC_INVALID"
    assert '"org/repo/HEAD"' in caught.value.message


def test_gh_unreachable_host_is_provider_unavailable(settings, unique):
    # A port on loopback where nothing listens, allowed like an on-premises server.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.BINDERY_ALLOWED_GIT_HOSTS = [f"127.0.0.1:{port}"]
    settings.BINDERY_PROVIDER_URLS = {
        **settings.BINDERY_PROVIDER_URLS,
        "gh": f"http://127.0.0.1:{port}",
    }
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", "org/repo/main", None)
    assert caught.value.code == "PROVIDER_UNAVAILABLE"
    assert caught.value.status == 503


def test_gl_escaped_nested_namespace(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("gl")
    repo = server.create_repo(f"group/sub/{name}", {"environment.yml": "x"})
    server.commit(repo, {"x": "y"}, branch="dev/next")
    namespace = quote(f"group/sub/{name}", safe="")
    resolved = services.resolve("gl", f"{namespace}/main", None)
    assert resolved.resolved_ref == _git(repo.work, "rev-parse", "main").strip()
    assert resolved.repo_url == f"{server.base_url}/group/sub/{name}.git"
    assert resolved.persistent_spec == f"gl/{namespace}/{resolved.resolved_ref}"
    assert resolved.ref_url == f"{server.base_url}/group/sub/{name}/tree/{resolved.resolved_ref}"
    assert resolved.display_name == f"group/sub/{name}"
    # The ref after the namespace may itself be escaped and contain '/'.
    branch = services.resolve("gl", f"{namespace}/{quote('dev/next', safe='')}", None)
    assert branch.resolved_ref == repo.head


def test_gl_requires_a_ref(hosted_on_git_server):
    with pytest.raises(BinderyError) as caught:
        services.resolve("gl", "group%2Fproject/", None)
    assert caught.value.code == "SPEC_INVALID"


def test_gist_without_ref_is_latest_revision(hosted_on_git_server, unique):
    server = hosted_on_git_server
    gist_id = unique("g").replace("-", "")
    repo = server.create_repo(f"someone/{gist_id}", {"notebook.ipynb": "{}"})
    latest = server.commit(repo, {"notebook.ipynb": '{"v": 2}'})
    for spec in (f"someone/{gist_id}", f"someone/{gist_id}/HEAD", f"someone/{gist_id}/master"):
        resolved = services.resolve("gist", spec, None)
        assert resolved.resolved_ref == latest, spec
    resolved = services.resolve("gist", f"someone/{gist_id}", None)
    assert resolved.repo_url == f"{server.base_url}/someone/{gist_id}.git"
    assert resolved.persistent_spec == f"gist/someone/{gist_id}/{latest}"
    assert resolved.ref_url == f"{server.base_url}/someone/{gist_id}/{latest}"


def test_gist_sha_is_used_as_given(hosted_on_git_server, unique):
    server = hosted_on_git_server
    gist_id = unique("g").replace("-", "")
    repo = server.create_repo(f"someone/{gist_id}", {"a.py": "1"})
    first = repo.head
    server.commit(repo, {"a.py": "2"})
    assert services.resolve("gist", f"someone/{gist_id}/{first}", None).resolved_ref == first


def test_git_escaped_url_and_ref(hosted_on_git_server, unique):
    server = hosted_on_git_server
    repo = server.create_repo(unique("plain"), {"setup.py": "x"})
    server.commit(repo, {"y": "1"}, branch="topic/one")
    escaped = quote(repo.url, safe="")
    resolved = services.resolve("git", f"{escaped}/topic/one", None)
    assert resolved.resolved_ref == repo.head
    assert resolved.repo_url == repo.url
    assert resolved.persistent_spec == f"git/{escaped}/{repo.head}"
    assert resolved.ref_url == repo.url  # BinderHub: no commit page for a generic host
    assert resolved.host == server.host
    main = services.resolve("git", f"{escaped}/main", None)
    assert main.resolved_ref == _git(repo.work, "rev-parse", "main").strip()


def test_git_requires_a_ref(hosted_on_git_server, unique):
    with pytest.raises(BinderyError) as caught:
        services.resolve("git", quote("http://example.org/r.git", safe=""), None)
    assert caught.value.code == "SPEC_INVALID"


def test_empty_repository_head_is_ref_not_found(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("empty")
    bare = server.root / "repos" / "org" / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git(bare.parent, "init", "--bare", "-q", bare.name)
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"org/{name}/HEAD", None)
    assert caught.value.code == "REF_NOT_FOUND"


def test_resolve_url_matches_the_provider(repo, settings):
    server, name, refs = repo
    settings.BINDERY_PROVIDER_URLS = {
        **settings.BINDERY_PROVIDER_URLS,
        "gl": "https://gitlab.com",
        "gist": "https://gist.github.com",
    }
    # mybinder's form reads one path segment after /tree/ as the ref; an explicit ref wins.
    tree_url = f"{server.base_url}/org/{name}/tree/feature/x"
    assert services.parse_repo_input(tree_url) == ("gh", f"org/{name}/feature")
    assert services.parse_repo_input(tree_url, "feature/x") == ("gh", f"org/{name}/feature/x")
    explicit = services.resolve_url(f"{server.base_url}/org/{name}", "feature/x", None)
    by_spec = services.resolve("gh", f"org/{name}/feature/x", None)
    assert explicit == by_spec
    default = services.resolve_url(f"{server.base_url}/org/{name}.git", "", None)
    assert default.resolved_ref == refs["main"]


def test_unknown_provider(hosted_on_git_server):
    with pytest.raises(BinderyError) as caught:
        services.resolve("bitbucket", "a/b/main", None)
    assert caught.value.code == "PROVIDER_UNKNOWN"


@pytest.fixture
def redirecting_server(settings):
    """A real HTTP server on loopback answering every request with a redirect to a
    loopback address git must not be taken to."""
    import http.server
    import threading

    hits: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(301)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere.git/info/refs")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    settings.BINDERY_ALLOWED_GIT_HOSTS = [host]
    yield host, hits
    server.shutdown()
    server.server_close()


def test_git_redirects_are_not_followed(redirecting_server):
    host, hits = redirecting_server
    with pytest.raises(BinderyError) as caught:
        services.resolve("git", quote(f"http://{host}/old.git", safe="") + "/main", None)
    assert caught.value.code == "REPO_REDIRECTED"
    assert hits == ["/old.git/info/refs?service=git-upload-pack"]
