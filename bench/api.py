"""Benchmark: the latency of ``GET /api/v1/sessions/`` and ``GET /api/v1/me/`` with a
personal token, against the web process as the Procfile runs it (daphne on 127.0.0.1).

Run with ``.venv/bin/python bench/api.py [requests] [rows]`` (defaults 200 and 100) from the
project root, with DATABASE_URL naming a PostgreSQL server: the benchmark makes a database of
its own there (``bench_api_<pid>``) and drops it at the end.

- Set-up: migrations; one user with ``rows`` sessions (real rows: a build each, a tenth of
  them ready, the others stopped or failed, five launch events each, as launches leave them),
  a home volume and a personal token. An embedded Redis and daphne, each in its own process
  group, with every directory under one temporary root. No hub and no worker: listing
  sessions calls neither.
- Measured: ``requests`` sequential requests of each URL over one keep-alive connection,
  after a warm-up, timed from the request to the last byte of the response: the default page
  (50 rows and the count), ``?page_size=100`` (every row), and ``/api/v1/me/`` (the cost of
  the request itself: the token, the middleware). Also the queries of one request of each,
  counted in this process with Django's test client.
Prints p50, p95 and max per URL, and the CPU time daphne spent per request (a busy machine
stretches the times; the CPU time much less). The goal (issue 13): sessions p95 ≤ 50 ms
with 100 rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import requests
from _common import PYTHON, ROOT, free_port, percentile, throwaway_postgres, wait_until

WARMUP = 20
URLS = ["/api/v1/sessions/", "/api/v1/sessions/?page_size=100", "/api/v1/me/"]


def seed(rows: int) -> str:
    """The user, their sessions and a token; returns the token's secret."""
    from django.utils import timezone

    from apps.accounts.models import User
    from apps.accounts.services import create_api_token
    from apps.builds.models import Build
    from apps.sessions.models import Session, SessionEvent
    from apps.sessions.services import ensure_volumes

    user = User.objects.create_user("bench", "bench@example.org", "x")
    now = timezone.now()
    for n in range(rows):
        started = now - timedelta(minutes=10 * (rows - n))
        build = Build.objects.create(
            provider="gh", spec=f"org/repo-{n}/main", repo_url=f"https://github.com/org/repo-{n}",
            repo_slug=f"org-repo-{n}", display_name=f"org/repo-{n}", resolved_ref="0" * 40,
            resolved={"persistent_spec": f"org/repo-{n}/{'0' * 40}"}, build_key=f"bench-{n}",
            status="ready", phase="built", environment_key=f"{n:064x}", requested_by=user,
            started_at=started, finished_at=started + timedelta(seconds=30),
            result={"environment_key": f"{n:064x}", "python_version": "3.12",
                    "packages": [["numpy", "2.1.0"]], "durations": {"install": 20.0}},
        )  # fmt: skip
        status = "ready" if n % 10 == 0 else "failed" if n % 10 == 5 else "stopped"
        session = Session.objects.create(
            user=user, build=build, hub_user=user.hub_name, provider="gh",
            spec=f"org/repo-{n}/main", status=status, memory_bytes=2 * 1024**3, cpu=1.0,
            url=f"/user/{user.hub_name}/s{n}/", created_at=started,
            ready_at=started + timedelta(seconds=40), last_activity=started,
            stopped_at=None if status == "ready" else started + timedelta(minutes=5),
            error_code="SPAWN_FAILED" if status == "failed" else "",
        )  # fmt: skip
        SessionEvent.objects.bulk_create(
            SessionEvent(session=session, n=i, phase=phase, message=f"{phase} …")
            for i, phase in enumerate(("waiting", "fetching", "built", "launching", "ready"), 1)
        )
    ensure_volumes(user)
    return create_api_token(user, "bench").secret


def count_queries(secret: str) -> dict[str, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"token {secret}")
    counts = {}
    for url in URLS:
        client.get(url)  # the token's last_used_at is written at most once a minute
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        counts[url] = len(captured.captured_queries)
    return counts


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base: str, secret: str, count: int, server: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each URL's response times, and the server's CPU time per request (which, unlike the
    times, a busy machine does not inflate much)."""
    http = requests.Session()
    http.headers["Authorization"] = f"token {secret}"
    times: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    for url in URLS:
        for _ in range(WARMUP):
            http.get(base + url, timeout=30).raise_for_status()
        spent = times[url] = []
        used = cpu_seconds(server)
        for _ in range(count):
            started = time.perf_counter()
            response = http.get(base + url, timeout=30)
            response.content  # noqa: B018 - the whole body is part of the time
            spent.append(time.perf_counter() - started)
            response.raise_for_status()
        cpu[url] = (cpu_seconds(server) - used) / count
    return times, cpu


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    database = os.environ.get("DATABASE_URL", "")
    if not database.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL server (postgres://user@host:port/db).")
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with throwaway_postgres(database, f"bench_api_{os.getpid()}") as url:
            env = {**os.environ, "DATABASE_URL": url, "BINDERY_VAR_DIR": str(root / "var"),
                   "PYTHONUNBUFFERED": "1",
                   "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
            env.pop("REDIS_URL", None)  # an embedded Redis of the benchmark's own
            os.environ.clear()
            os.environ.update(env)
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connection

            call_command("migrate", verbosity=0)
            secret = seed(rows)
            queries = count_queries(secret)
            connection.close()
            port = free_port()
            log = open(root / "web.log", "ab")  # noqa: SIM115 - closed with the processes
            for command in (
                [PYTHON, "manage.py", "embedded_redis"],
                [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port),
                 "portal.asgi:application"],
            ):  # fmt: skip
                processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True))  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"token {secret}"}
            wait_until(lambda: requests.get(f"{base}/api/v1/me/", headers=headers, timeout=2).ok,
                       60, "daphne")  # fmt: skip
            times, cpu = measure(base, secret, count, processes[-1].pid)
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)
            log.close()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        shutil.rmtree(root, ignore_errors=True)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"{rows} sessions, {count} sequential requests per URL over keep-alive (daphne; "
          f"load average {load} on {os.cpu_count()} CPUs):")  # fmt: skip
    for url, spent in times.items():
        ms = [s * 1000 for s in spent]
        print(f"  GET {url:34} p50 {percentile(ms, 0.5):6.1f} ms  p95 {percentile(ms, 0.95):6.1f}"
              f" ms  max {max(ms):6.1f} ms  server CPU {cpu[url] * 1000:5.1f} ms  "
              f"({queries[url]} queries)")  # fmt: skip


if __name__ == "__main__":
    main()
