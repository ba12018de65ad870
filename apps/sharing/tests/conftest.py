"""Fixtures of the sharing tests: repositories on the real loopback git server (gh served
by it), a team environment, and credentials stored the way people store them."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.repos import services as repos
from apps.repos.tests.gitserver import GitServer


@pytest.fixture
def hosted(git_host: Any, settings: Any) -> Any:
    """gh served by the loopback git server; ``hosted.repo(private=...)`` makes a repository
    and returns it with its ``spec`` (``gh/<name>/main``)."""
    settings.BINDERY_PROVIDER_URLS = {
        **django_settings.BINDERY_DEFAULT_PROVIDER_URLS,
        "gh": git_host.base_url,
    }
    settings.BINDERY_BANNED_SPECS = {}
    settings.BINDERY_ALLOWED_SPECS = {}

    def repo(private: bool = False) -> SimpleNamespace:
        name = f"{'private' if private else 'lab'}/share-{uuid.uuid4().hex[:10]}"
        made = git_host.create_repo(name, {"requirements.txt": "", "index.ipynb": "{}"})
        return SimpleNamespace(repo=made, name=name, spec=f"gh/{name}/main", url=made.url)

    return SimpleNamespace(server=git_host, repo=repo)


def store_credential(owner: Any, host: str, *, team: Any = None) -> Any:
    """A real stored (encrypted) credential that can read the server's private repositories."""
    return repos.create_credential(
        owner, host=host, username=GitServer.username, token=GitServer.token, team=team
    )
