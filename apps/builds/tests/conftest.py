from __future__ import annotations

import itertools

import pytest

from apps.accounts.tests.factories import UserFactory

_names = itertools.count(1)


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def public_repo(git_host):
    """A small public repository on the loopback git server (a new one per test)."""
    return git_host.create_repo(
        f"org/public-{next(_names)}", {"requirements.txt": "tabulate==0.9.0\n", "README.md": "hi"}
    )


@pytest.fixture
def private_repo(git_host):
    """A repository behind HTTP basic auth on the loopback git server."""
    return git_host.create_repo(f"private/lab/secret-{next(_names)}", {"requirements.txt": ""})
