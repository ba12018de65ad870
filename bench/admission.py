"""Benchmark: the latency of ``POST /api/v1/sessions/`` up to the enqueue of the launch.

Run with ``.venv/bin/python bench/admission.py [calls]`` (default 30) from the project root.
It uses the configured database (DATABASE_URL, else SQLite) the way the tests do: a throwaway
test database of its own (``test_bench_admission_<pid>``), Django's test environment and the
tests' fast password hasher. Redis is REDIS_URL's (else an embedded server on a socket of its
own) under a key prefix of its own, so no worker anywhere picks up what it queues; its keys
are deleted at the end.

- Set-up: a git server on 127.0.0.1 with a small repository; a user with a generous limit
  (1000 sessions, as a user quota where the quota engine has one); the first launch requests
  the build, which is run here, offline from the shared uv cache (``bin/warm-test-cache``).
- Measured: ``calls`` sequential launches of that repository through DRF with a real token,
  each timed from the request to the response, which comes after the commit and the
  ``launch_session`` enqueue (``transaction.on_commit``): resolving the ref (``git ls-remote``
  against the local server), admission, the build lookup, the session row and its event.
  No worker runs: the sessions stay queued, each one counted by the next admission.
Prints each call, the median and p95, the queries per call, and the medians of the two named
steps inside: ``resolve_input`` (the ref, over git) and ``admit`` (the quota check).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["BINDERY_REDIS_PREFIX"] = f"bench-admission-{os.getpid()}"
_SOCKET_DIR = None
if not os.environ.get("REDIS_URL"):
    _SOCKET_DIR = Path(tempfile.mkdtemp(prefix="bindery-bench-redis-"))
    os.environ["REDIS_URL"] = f"unix://{_SOCKET_DIR / 'redis.sock'}"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    setup_test_environment,
    teardown_test_environment,
)

WARMUP = 3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_redis() -> Any:
    if _SOCKET_DIR is None:
        return None
    from portal import embedded_redis

    return embedded_redis.start_background(_SOCKET_DIR / "redis.sock")


def forget_redis_keys() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def generous_user() -> Any:
    from apps.accounts.models import User

    user = User.objects.create_user("bench", "bench@example.org", "x")
    settings.BINDERY_MAX_SESSIONS_PER_USER = 1000
    try:  # the quota engine: a user's own limit (before it, the setting was the limit)
        from apps.quotas.models import Quota
    except ImportError:
        return user
    if any(f.name == "values" for f in Quota._meta.get_fields()):
        Quota.objects.create(scope="user", user=user, values={"sessions": 1000})
    return user


def timed(module: Any, name: str, spent: list[float]) -> None:
    """Wrap ``module.name`` so that each call adds its duration to ``spent[-1]``."""
    inner = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[-1] += time.perf_counter() - started

    setattr(module, name, wrapper)


def measure(calls: int) -> tuple[list[float], list[int], dict[str, list[float]]]:
    from rest_framework.test import APIClient

    from apps.accounts.services import create_api_token
    from apps.builds.models import Build
    from apps.builds.services import execute_build
    from apps.repos.tests.gitserver import GitServer
    from apps.sessions import services

    # the launch's two named steps, as apps.sessions.services calls them
    phases: dict[str, list[float]] = {"resolve_input": [0.0], "admit": [0.0]}
    for name, spent in phases.items():
        timed(services, name, spent)
    server = GitServer()
    try:
        repo = server.create_repo(f"lab/admission-{uuid.uuid4().hex[:6]}",
                                  {"requirements.txt": "", "index.ipynb": "{}"})  # fmt: skip
        settings.BINDERY_ALLOWED_GIT_HOSTS = [server.host]
        user = generous_user()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"token {create_api_token(user, 'bench').secret}")
        body = {"repo_url": repo.url, "ref": "main"}

        first = client.post("/api/v1/sessions/", body, format="json")
        assert first.status_code == 201, first.json()
        print("building the environment (offline, shared uv cache) …", flush=True)
        started = time.monotonic()
        status = execute_build(first.json()["build"], worker="bench")
        assert status == Build.Status.READY, Build.objects.get(pk=first.json()["build"]).error
        print(f"built in {time.monotonic() - started:.1f} s")

        times: list[float] = []
        queries: list[int] = []
        for n in range(WARMUP + calls):
            for spent in phases.values():
                spent.append(0.0)
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.post("/api/v1/sessions/", body, format="json")
                elapsed = time.perf_counter() - started
            assert response.status_code == 201, response.json()
            assert response.json()["status"] == "launching"  # the build reused, launch queued
            if n < WARMUP:
                continue
            times.append(elapsed)
            queries.append(len(captured.captured_queries))
            print(f"call {len(times):2}: {elapsed * 1000:7.1f} ms  ({queries[-1]} queries; "
                  + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in phases.items()) + ")",
                  flush=True)  # fmt: skip
        return times, queries, {k: v[-calls:] for k, v in phases.items()}
    finally:
        server.close()
        shutil.rmtree(server.root, ignore_errors=True)


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    redis_server = start_redis()
    Path(settings.BINDERY_BUILD_DIR).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-admission-", dir=settings.BINDERY_BUILD_DIR))
    checkouts = Path(tempfile.mkdtemp(prefix="bench-admission-", dir=settings.VAR_DIR))
    # environments beside the uv cache (hardlinks), as the portal keeps them; checkouts not
    settings.BINDERY_ENVS_DIR = work / "envs"
    settings.BINDERY_CHECKOUTS_DIR = checkouts
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    test = settings.DATABASES["default"].setdefault("TEST", {})
    if connection.vendor != "sqlite":  # never the name a concurrent test run uses
        test["NAME"] = f"test_bench_admission_{os.getpid()}"
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(f"database: {connection.vendor}; redis: {settings.REDIS_URL}")
        times, queries, phases = measure(calls)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()
        forget_redis_keys()
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(checkouts, ignore_errors=True)
        if _SOCKET_DIR is not None:
            shutil.rmtree(_SOCKET_DIR, ignore_errors=True)
    median, p95 = statistics.median(times), percentile(times, 0.95)
    print(
        f"\nPOST /api/v1/sessions/ up to the enqueue, {len(times)} sequential calls "
        f"({connection.vendor}): median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"min {min(times) * 1000:.1f} ms; {statistics.median(queries):g} queries per call"
    )
    steps = (f"{k} {statistics.median(v) * 1000:.1f} ms" for k, v in phases.items())
    print("medians of its steps: " + ", ".join(steps))


if __name__ == "__main__":
    main()
