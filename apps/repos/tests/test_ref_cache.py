"""The brief cache of public refs (``BINDERY_REF_CACHE_SECONDS``), against the real git
smart-HTTP server on 127.0.0.1 (its request log shows whether the host was asked) and the
real cache (Redis)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from apps.accounts.tests.factories import UserFactory
from apps.repos import services
from apps.repos.tests.gitserver import GitServer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cache_on(settings):
    settings.BINDERY_REF_CACHE_SECONDS = 30
    cache.clear()


def asked(server, name: str) -> int:
    return sum(1 for _, path, _ in server.requests if path.startswith(f"/org/{name}/") or
               path.startswith(f"/private/{name}/"))  # fmt: skip


def test_a_public_ref_is_resolved_once_for_many_launches(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("busy")
    repo = server.create_repo(f"org/{name}", {"requirements.txt": ""})
    first = services.resolve("gh", f"org/{name}/main", None).resolved_ref
    before = asked(server, name)
    assert before > 0
    for _ in range(5):
        assert services.resolve("gh", f"org/{name}/main", None).resolved_ref == first
    assert asked(server, name) == before  # the room's launches did not ask the host again
    # a push is seen once the entry has gone (here: at once with the cache off)
    pushed = server.commit(repo, {"new.txt": "x"}, branch="main")
    assert services.resolve("gh", f"org/{name}/main", None).resolved_ref == first
    cache.clear()
    assert services.resolve("gh", f"org/{name}/main", None).resolved_ref == pushed
    # other refs of the same repository are their own entries
    assert services.resolve("gh", f"org/{name}/HEAD", None).resolved_ref == pushed


def test_a_private_ref_is_never_kept(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("secret")
    server.create_repo(f"private/{name}", {"requirements.txt": ""})
    owner = UserFactory()
    services.create_credential(owner, host=server.host, username=GitServer.username,
                               token=GitServer.token)  # fmt: skip
    sha = services.resolve("gh", f"private/{name}/main", owner).resolved_ref
    before = asked(server, name)
    assert services.resolve("gh", f"private/{name}/main", owner).resolved_ref == sha
    assert asked(server, name) > before  # asked again: a credential's answer is not shared
    # and someone without the credential learns nothing from the owner's resolution
    with pytest.raises(Exception) as refused:
        services.resolve("gh", f"private/{name}/main", UserFactory())
    assert getattr(refused.value, "code", "") == "REPO_NOT_FOUND_OR_PRIVATE"
