"""Builds end to end, all real: the API, a Celery worker (real Redis broker), the local
builder (uv offline from the shared cache) and a git server on 127.0.0.1 behind HTTP basic
auth for the private repository."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from apps.builds import services
from apps.builds.models import Build, BuildLogLine
from apps.builds.tests.helpers import (
    Gate,
    children_of,
    envs_beside_the_cache,
    exits,
    pastas_of,
)
from apps.repos.models import Credential
from apps.sessions.tests.conftest import wait_for
from portal.celery import app as celery_app

pytestmark = [pytest.mark.build, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def offline(settings, tmp_path):
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        yield settings


def wait_build(build_id: int, timeout: float = 300) -> Build:
    return wait_for(
        lambda: (b := Build.objects.get(pk=build_id)).is_terminal and b, timeout,
        f"build {build_id} to finish",
    )  # fmt: skip


def every_stored_text() -> list[tuple[str, str, str]]:
    """(table, column, value) for every text-like value in every table of the database."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            description = connection.introspection.get_table_description(cursor, table)
            columns = [col.name for col in description]
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str | bytes | memoryview):
                        text = bytes(value).decode(errors="replace") if not isinstance(
                            value, str) else value  # fmt: skip
                        found.append((table, column, text))
                    elif isinstance(value, dict | list):
                        found.append((table, column, json.dumps(value)))
    return found


def test_private_repo_builds_with_a_credential_and_the_token_leaks_nowhere(
    offline, token_client, alice, bob, private_repo, git_host
):
    token = git_host.token
    git_host.commit(private_repo, {"requirements.txt": "tabulate==0.9.0\n",
                                   "postBuild": "echo building with secrets around\n"},
                    executable=["postBuild"])  # fmt: skip
    client = token_client(alice)
    responses = []
    created = client.post("/api/v1/credentials/", {"host": git_host.host, "token": token,
                                                   "username": git_host.username},
                          format="json")  # fmt: skip
    assert created.status_code == 201, created.json()
    responses.append(created)

    # Without a credential: a clear refusal, nothing stored.
    refused = token_client(bob).post("/api/v1/builds/", {"repo_url": private_repo.url},
                                     format="json")  # fmt: skip
    assert refused.json()["error"] == "REPO_NOT_FOUND_OR_PRIVATE"
    assert Build.objects.count() == 0
    responses.append(refused)

    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=120):  # fmt: skip
        response = client.post("/api/v1/builds/", {"repo_url": private_repo.url}, format="json")
        assert response.status_code == 201, response.json()
        build = wait_build(response.json()["id"])
    assert build.status == "ready", build.error_message
    assert build.result["reused"] is False
    lines = list(BuildLogLine.objects.filter(build=build).values_list("text", flat=True))
    assert any("building with secrets around" in line for line in lines)
    for path in ("", "log/?limit=5000"):
        responses.append(client.get(f"/api/v1/builds/{build.pk}/{path}"))
    responses.append(client.get("/api/v1/builds/"))
    responses.append(client.get("/api/v1/credentials/"))

    assert git_host.requests and any(auth for _, path, auth in git_host.requests
                                     if path.startswith("/private/"))  # fmt: skip
    assert not any(token in line for line in lines)
    for r in responses:
        assert token not in r.content.decode(), r.request["PATH_INFO"]
    leaks = [(t, c) for t, c, v in every_stored_text() if token in v]
    assert leaks == []  # not even the encrypted column holds it in clear
    assert Credential.objects.get().encrypted_token  # ... which is where it lives, encrypted


def test_credential_deleted_before_the_build_runs_fails_clearly(
    offline, token_client, alice, private_repo, git_host
):
    client = token_client(alice)
    body = {"host": git_host.host, "token": git_host.token, "username": git_host.username}
    credential = client.post("/api/v1/credentials/", body, format="json").json()
    build_id = client.post("/api/v1/builds/", {"repo_url": private_repo.url},
                           format="json").json()["id"]  # fmt: skip
    assert client.delete(f"/api/v1/credentials/{credential['id']}/").status_code == 204
    assert services.execute_build(build_id) == "failed"
    build = Build.objects.get(pk=build_id)
    assert build.error_code == "CREDENTIAL_GONE" and build.error_message


def _worker_env(settings) -> dict[str, str]:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = (f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                        f"{db['PORT'] or 5432}/{db['NAME']}")  # fmt: skip
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": django_settings.REDIS_URL,
        "BINDERY_REDIS_PREFIX": django_settings.REDIS_KEY_PREFIX,
        "BINDERY_ALLOWED_GIT_HOSTS": ",".join(settings.BINDERY_ALLOWED_GIT_HOSTS),
        "BINDERY_UV_OFFLINE": "true",
        "BINDERY_ENVS_DIR": str(settings.BINDERY_ENVS_DIR),
        "BINDERY_CHECKOUTS_DIR": str(settings.BINDERY_CHECKOUTS_DIR),
        "BINDERY_UV_CACHE_DIR": str(settings.BINDERY_UV_CACHE_DIR),
    }


def test_a_worker_killed_mid_build_does_not_leave_it_running(offline, alice, public_repo, git_host):
    gate = Gate()
    git_host.commit(public_repo, {"postBuild": "echo waiting at the gate\n" + gate.script},
                    executable=["postBuild"])  # fmt: skip
    resolved, _ = services.resolve_input(alice, repo_url=public_repo.url)
    build = services.request_build(resolved, alice).build
    # A real worker process, on the real broker, with the test's database.
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo",
         "--without-mingle", "--without-gossip", "--loglevel=WARNING"],
        cwd=django_settings.BASE_DIR, env=_worker_env(offline), start_new_session=True,
    )  # fmt: skip
    try:
        services.enqueue_build(build.pk)
        lines = BuildLogLine.objects.filter(build_id=build.pk, text__contains=gate.name)
        gate.feed(wait_for(lambda: lines.values_list("text", flat=True).first(), 120, "postBuild"))
        gate.wait_arrival()  # postBuild is running inside the worker's build
        build.refresh_from_db()
        assert build.status == "running" and build.worker
        isolated = BuildLogLine.objects.filter(
            build_id=build.pk, text__startswith="Build commands get a network of their own"
        ).exists()  # as the worker's own settings decided
        pastas = pastas_of(worker.pid)  # (the solo pool builds in the worker process itself)
        assert len(pastas) == (1 if isolated else 0)
        sandboxes = children_of(worker.pid, "bwrap")  # postBuild's, the namespace's holder
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        assert all(exits(pasta) for pasta in pastas), "pasta outlived its build's worker"
        assert all(exits(pid) for pid in sandboxes), "a sandbox outlived its build's worker"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        gate.close()
    build.refresh_from_db()
    assert build.status == "running"  # nobody is left to say otherwise ...
    assert services.reap_stale_builds() == []  # ... and its heartbeat is still fresh
    later = timezone.now() + services.STALE_AFTER + timedelta(seconds=1)
    assert services.reap_stale_builds(later) == [build.pk]  # ... until it is stale
    build.refresh_from_db()
    assert (build.status, build.error_code) == ("failed", "BUILD_LOST")
