"""The web process's database pool: daphne, as the Procfile runs it, on PostgreSQL.

Real parts: daphne in a process of its own serving ``portal.asgi`` against this test run's
PostgreSQL database and Redis, a real personal token, real build event streams held open
(``text/event-stream``, a build still running) and real API requests over HTTP on
127.0.0.1. Its connections are told apart in ``pg_stat_activity`` by an application name of
the test's own. SQLite has no pool: the test skips there (and fails in CI, which runs
PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone
from jupyterhub.utils import random_port

from apps.accounts.services import create_api_token
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.testing import requires

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires(connection.vendor == "postgresql", reason="the web pool is PostgreSQL's (psycopg)"),
]

POOL = 2
STREAMS = 3  # more than the pool: a stream holds a connection only while it queries
REQUESTS = 24


def _backends(name: str) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [name])
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """daphne with a pool of ``POOL``; yields its base URL and its connections' name."""
    name = f"bindery-pool-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}?application_name={name}"
    port = random_port()  # as the spawner picks its servers' ports
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_POOL_WEB_SIZE": str(POOL),
           "DATABASE_POOL_WEB_TIMEOUT": "20", "REDIS_URL": settings.REDIS_URL,
           "BINDERY_VAR_DIR": str(settings.VAR_DIR), "SECRET_KEY": settings.SECRET_KEY,
           "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
    log = open(tmp_path / "daphne.log", "wb")  # noqa: SIM115 - closed below
    daphne = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
         "portal.asgi:application"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while daphne.poll() is None and time.monotonic() < deadline:  # until it answers
            try:
                requests.get(f"{base}/health", timeout=1)
                break
            except requests.ConnectionError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daphne.wait(timeout=0.1)  # or it exits
        assert daphne.poll() is None, (tmp_path / "daphne.log").read_text()
        yield base, name
    finally:
        daphne.terminate()
        daphne.wait(timeout=30)
        log.close()


def test_requests_and_open_streams_share_a_bounded_pool(web: tuple[str, str]) -> None:
    base, name = web
    user: Any = UserFactory()
    secret = create_api_token(user, "pool").secret
    headers = {"Authorization": f"token {secret}"}
    build = Build.objects.create(
        provider="gh", spec="org/repo/main", repo_url="https://github.com/org/repo",
        repo_slug="org-repo", display_name="org/repo", resolved_ref="0" * 40, resolved={},
        build_key=f"pool-{uuid.uuid4().hex}", status="building", phase="building",
        requested_by=user, started_at=timezone.now(),
    )  # fmt: skip
    assert requests.get(f"{base}/api/v1/me/", headers=headers, timeout=30).status_code == 200
    first = _backends(name)
    assert 1 <= len(first) <= POOL  # the control: the query finds daphne's connections

    streams: list[Any] = []
    try:
        for _ in range(STREAMS):
            stream = requests.get(f"{base}/api/v1/builds/{build.pk}/events/",
                                  headers={**headers, "Accept": "text/event-stream"},
                                  stream=True, timeout=30)  # fmt: skip
            assert stream.status_code == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            streams.append(stream)
            next(stream.iter_content(chunk_size=None))  # its first event: it is streaming

        def get(i: int) -> int:
            path = "/api/v1/sessions/" if i % 2 else "/api/v1/me/"
            return requests.get(base + path, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=8) as threads:
            statuses = list(threads.map(get, range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        during = _backends(name)
        assert 1 <= len(during) <= POOL  # three streams and eight clients, two connections
        assert first <= during  # taken again from the pool, not opened per request
    finally:
        for stream in streams:
            stream.close()
