"""Fixtures of the repos tests.

Git providers run against the real git smart-HTTP server on 127.0.0.1 (``git_host``).
Outside services (Zenodo, Figshare, Dataverse, HydroShare, CKAN, Software Heritage,
doi.org) are replayed from RECORDED responses in ``recorded/`` with ``responses``; the
DNS answers of the hosts they name are recorded too (``recorded/dns.json``), because this
machine resolves no outside name.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import responses
from django.conf import settings as django_settings

RECORDED = Path(__file__).parent / "recorded"


def recorded_json(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text())


def recorded_file(name: str) -> bytes:
    return (RECORDED / "files" / name).read_bytes()


@pytest.fixture
def provider_urls(settings):
    """The real providers' base URLs (whatever the environment says)."""
    settings.BINDERY_PROVIDER_URLS = dict(django_settings.BINDERY_DEFAULT_PROVIDER_URLS)
    settings.BINDERY_ALLOWED_GIT_HOSTS = []
    settings.BINDERY_BANNED_SPECS = {}
    settings.BINDERY_ALLOWED_SPECS = {}
    return settings.BINDERY_PROVIDER_URLS


@pytest.fixture
def hosted_on_git_server(git_host, settings):
    """gh, gl and gist served by the loopback git server (git_host allows its host:port)."""
    settings.BINDERY_PROVIDER_URLS = {
        **django_settings.BINDERY_DEFAULT_PROVIDER_URLS,
        "gh": git_host.base_url,
        "gl": git_host.base_url,
        "gist": git_host.base_url,
    }
    settings.BINDERY_BANNED_SPECS = {}
    settings.BINDERY_ALLOWED_SPECS = {}
    return git_host


@pytest.fixture
def unique():
    """A fresh name for a repository on the session-wide git server."""
    return lambda prefix="repo": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def recorded_dns(monkeypatch):
    """Resolve the outside host names of the recordings to their recorded (public)
    addresses; every other name goes to the real resolver (``localhost``...)."""
    table: dict[str, list[str]] = recorded_json("dns")
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in table:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port or 443))
                for ip in table[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def recorded_http(provider_urls, recorded_dns):
    """A ``responses`` mock in which only registered (recorded) answers exist; an
    unregistered request is a connection error, and every registered one must be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def processes(monkeypatch):
    """Every subprocess started during the test (``git`` included), still really run."""
    started: list[list[str]] = []
    real = subprocess.Popen

    class Recording(real):
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            started.append(list(args) if not isinstance(args, str) else [args])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return started
