"""Benchmark: a room of attendees joining a workshop, on warm seats and on cold ones.

Run with ``.venv/bin/python bench/workshop.py [--starts 4,10,30] [--seats 30] [--window 10]``
from the project root (run ``bin/warm-test-cache`` first). Everything runs on 127.0.0.1 in a
temporary directory: a git server with a small repository and the portal's processes
(``bench/_common.py``'s ``Stack``: embedded Redis, daphne, ``manage.py runhub``, a Celery
worker as the Procfile runs it — threads, ``--concurrency`` of them, by default the
settings' — with Celery beat a thread of it,
whose ``tend-workshops`` round every 15 s fills warm pools). The database is SQLite under
the temporary directory, or, with ``DATABASE_URL`` set to a PostgreSQL server, a throwaway
database ``bench_workshop_<pid>`` on it. This process talks to the same database and Redis
and drives the workshops through ``apps.workshops.services`` as the pages and the API do.

1. Pool warming, once per ``--starts`` value (``BINDERY_WORKSHOP_WARM_STARTS``, with
   ``BINDERY_WORKSHOP_WARM_MAX`` = seats): a workshop of ``--seats`` guest seats opening in
   five minutes (inside the warm lead time) is created and pre-built; measured from the first
   warm server's row to the last one ready ("pool warm"), and from the build being ready to
   the first warm row (beat's latency). The workshop is closed and its servers stopped.
2. Warm round (the best ``--starts``): a new workshop, its pool warmed, then opened; as many
   guests as seats join from threads, arriving at random over ``--window`` seconds, as a
   room does. Each is timed from the join call to its server being ready: the session row
   ``ready`` and ``GET <server>/api/status`` with the session's token answering 200 through
   the hub's proxy. Printed: p50/p95/max, and the join call itself (the seat transaction and
   the handover) apart from the rest.
3. Cold round: the worker and beat restart with ``BINDERY_WORKSHOP_WARM_MAX=0``; a second
   workshop, the same room: every seat starts its server on join.
Every attendee must end ready; any that does not is listed. Goal on a 2-core machine: warm
p50 ≤ 1 s, p95 ≤ 2 s.

Joins go through the API by default (``--via api``: ``POST /api/v1/workshops/join/`` on
daphne, then ``status_url`` every ``POLL`` seconds until ``open_url``); ``--via service``
calls ``services.join`` in this process and reads the session row. ``--rounds warm`` or
``cold`` runs one room; ``--starts ""`` skips the pool trials; ``--keep`` keeps the
temporary directory (``stack.log``). On PostgreSQL, daphne closes its connections after
each request (``DATABASE_CONN_MAX_AGE_WEB``, default 0): kept per request thread (as with
60), 30 polling guests opened 80+ and a server with ``max_connections=100`` refused the rest
(500s, lost attendees).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import requests
from _common import ROOT, Stack, percentile, throwaway_postgres, wait_until

GOAL_P50, GOAL_P95 = 1.0, 2.0
READY_TIMEOUT = 240.0
POLL = 0.5  # seconds between a waiting guest's polls of status_url, as a page would


@dataclass
class Attendee:
    name: str
    arrival: float  # seconds into the room's window
    warm: bool = False
    join: float = 0.0  # the join call (seat + handover or cold start request)
    row: float = 0.0  # join call → the session row ready
    ready: float = 0.0  # join call → the server answered with the token
    error: str = ""
    session_id: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:22} (none)"
    return (f"{label:22} p50 {statistics.median(values):6.2f} s   "
            f"p95 {percentile(values, 0.95):6.2f} s   max {max(values):6.2f} s")  # fmt: skip


# --- in this process, against the stack's database ------------------------------------------


def setup_django(stack: Stack) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(stack.env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()


def restart_workers(stack: Stack, **changes: str) -> None:
    """Restart the worker and beat with ``changes``; return once the worker answers a ping
    (what is queued meanwhile would otherwise wait for its start-up and count as latency)."""
    from portal.celery import app

    stack.restart_celery(**changes)
    wait_until(lambda: app.control.ping(timeout=0.5), 60, "the worker to start", every=0.5)


def make_instructor() -> Any:
    from apps.accounts.models import User
    from apps.quotas.models import Quota

    user = User.objects.create_user("instructor", "instructor@example.org", "x")
    Quota.objects.create(scope="user", user=user, values={"sessions": 500})
    return user


def create_workshop(instructor: Any, repo_url: str, seats: int, *, opens_in: timedelta) -> Any:
    from django.utils import timezone

    from apps.workshops import services

    now = timezone.now()
    return services.create_workshop(
        instructor, title=f"Bench {now:%H:%M:%S}", repo_url=repo_url, ref="main",
        opens_at=now + opens_in, closes_at=now + timedelta(hours=2), seats=seats, guests=True,
        session_minutes=60,
    )  # fmt: skip


def wait_built(workshop: Any) -> Any:
    from apps.builds.models import Build

    build = wait_until(lambda: (b := Build.objects.get(pk=workshop.build_id)).is_terminal and b,
                       300, "the pre-build")  # fmt: skip
    if build.status != Build.Status.READY:
        sys.exit(f"the pre-build failed: {build.error_code} {build.error_message}")
    return build


def warm_pool(workshop: Any, size: int) -> dict[str, float]:
    """Wait for ``size`` warm servers ready; their timings (seconds)."""
    from apps.sessions.models import Session

    build = wait_built(workshop)

    def pool() -> list[Session]:
        return list(Session.objects.filter(workshop=workshop, seat__isnull=True))

    def full() -> list[Session] | None:
        rows = pool()
        failed = [s for s in rows if s.status == Session.Status.FAILED]
        if failed:
            sys.exit(f"a warm server failed: {failed[0].error_code} {failed[0].error_message}")
        ready = [s for s in rows if s.status == Session.Status.READY]
        return ready if len(ready) >= size else None

    ready = wait_until(full, 600, f"{size} warm servers", every=0.2)
    first = min(s.created_at for s in ready)
    last = max(s.ready_at for s in ready)
    launches = [(s.ready_at - s.created_at).total_seconds() for s in ready]
    return {
        "pool": (last - first).total_seconds(),
        # from when the pool could start (built, and the workshop made) to its first server
        "beat": (first - max(build.finished_at or first, workshop.created_at)).total_seconds(),
        "launch_p50": statistics.median(launches),
        "launch_max": max(launches),
        "servers": len(pool()),
    }


def open_now(instructor: Any, workshop: Any) -> Any:
    from django.utils import timezone

    from apps.workshops import services

    opens = {"opens_at": timezone.now() - timedelta(seconds=1)}
    return services.update_workshop(instructor, workshop, opens)


def close_and_wait(instructor: Any, workshop: Any) -> None:
    from apps.sessions.models import Session
    from apps.workshops import services

    services.close_workshop(instructor, workshop)
    wait_until(lambda: not Session.objects.filter(workshop=workshop,
                                                  status__in=Session.ACTIVE).exists(),
               300, "the workshop's servers to stop", every=0.5)  # fmt: skip


def attend(person: Attendee, code: str, start: float, web: str) -> None:
    """One attendee: arrive at their moment, join, wait until their server answers with the
    token. ``web`` set: as a guest's browser does, through the API (``POST
    /api/v1/workshops/join/``, then ``status_url`` until ``open_url``); else by calling
    ``services.join`` here and reading the session row."""
    time.sleep(max(0.0, start + person.arrival - time.perf_counter()))  # the arrival, not a sync
    began = time.perf_counter()
    deadline = began + READY_TIMEOUT
    try:
        opened = (
            _join_api(person, code, web, deadline) if web else _join_here(person, code, deadline)
        )
        if not opened:
            return
        person.row = time.perf_counter() - began
        base, token = opened
        while True:
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(f"{base}/api/status", timeout=10,
                                      headers={"Authorization": f"token {token}"})  # fmt: skip
                if answer.status_code == 200:
                    break
            if time.perf_counter() > deadline:
                person.error = f"session {person.session_id} ready but its server never answered"
                return
            time.sleep(0.05)
        person.ready = time.perf_counter() - began
    except Exception as exc:  # a lost attendee is reported, not raised
        person.error = f"{type(exc).__name__}: {exc}"


def _join_api(person: Attendee, code: str, web: str, deadline: float) -> tuple[str, str] | None:
    began = time.perf_counter()
    with requests.Session() as http:
        answer = http.post(f"http://{web}/api/v1/workshops/join/", timeout=30,
                           json={"code": code, "name": person.name})  # fmt: skip
        person.join = time.perf_counter() - began
        if answer.status_code != 201:
            person.error = f"join answered {answer.status_code}: {answer.text[:200]}"
            return None
        body = answer.json()
        person.warm, person.session_id = body["warm"], body["session"]["id"]
        poll = f"{body['status_url']}&guest_token={quote(body['guest_token'])}"
        while not body["open_url"]:
            if body["session"]["status"] in ("stopped", "failed") or time.perf_counter() > deadline:
                person.error = f"session {person.session_id} {body['session']['status']}"
                return None
            time.sleep(POLL)  # a page polling status_url
            polled = http.get(poll, timeout=30)
            if polled.status_code != 200:
                person.error = f"status_url answered {polled.status_code}: {polled.text[:200]}"
                return None
            body = polled.json()
    parts = urlsplit(body["open_url"])
    token = parse_qs(parts.query)["token"][0]
    return urlunsplit(parts._replace(query="", fragment="")).rstrip("/"), token


def _join_here(person: Attendee, code: str, deadline: float) -> tuple[str, str] | None:
    from django.db import connection

    from apps.sessions import services as sessions
    from apps.sessions.models import Session
    from apps.workshops import services

    began = time.perf_counter()
    try:
        joined = services.join(code, name=person.name)
        person.join = time.perf_counter() - began
        person.warm, person.session_id = joined.warm, joined.session.pk
        while True:
            session = Session.objects.get(pk=joined.session.pk)
            if session.status == Session.Status.READY:
                break
            if session.is_terminal or time.perf_counter() > deadline:
                person.error = f"session {session.pk} {session.status}: {session.error_message}"
                return None
            time.sleep(0.05)
        base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
        return base, sessions.session_token(session)
    finally:
        connection.close()


def room(code: str, seats: int, window: float, label: str, web: str) -> list[Attendee]:
    people = [Attendee(f"{label} {i + 1}", random.uniform(0, window)) for i in range(seats)]
    start = time.perf_counter() + 0.5
    threads = [threading.Thread(target=attend, args=(p, code, start, web)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return people


def report_room(label: str, people: list[Attendee]) -> list[float]:
    ready = [p for p in people if not p.error]
    lost = [p for p in people if p.error]
    times = [p.ready for p in ready]
    print(f"\n{label}: {len(ready)}/{len(people)} ready, "
          f"{sum(p.warm for p in people)} handed a warm server")  # fmt: skip
    print(summary("join → server ready", times))
    print(summary("  the join call", [p.join for p in ready]))
    print(summary("  call → ready (row/url)", [p.row - p.join for p in ready]))
    print(summary("  row → server answers", [p.ready - p.row for p in ready]))
    for person in lost:
        print(f"  LOST {person.name} (arrived at {person.arrival:.1f} s): {person.error}")
    slowest = sorted(ready, key=lambda p: p.ready)[-3:]
    print("  slowest: " + ", ".join(f"{p.name} {p.ready:.2f} s (join {p.join:.2f}, arrived "
                                    f"{p.arrival:.1f})" for p in slowest))  # fmt: skip
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seats", type=int, default=30)
    parser.add_argument("--window", type=float, default=10.0, help="seconds the room arrives in")
    parser.add_argument(
        "--starts",
        default="4,10,30",
        help="BINDERY_WORKSHOP_WARM_STARTS values to try for the pool",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="Celery worker threads (0: the settings' CELERY_WORKER_CONCURRENCY)",
    )
    parser.add_argument(
        "--via",
        choices=("api", "service"),
        default="api",
        help="join through the API (daphne), or call services.join here",
    )
    parser.add_argument("--rounds", default="warm,cold", help="which rooms to run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    rounds = {r.strip() for r in args.rounds.split(",")}
    starts = [int(s) for s in args.starts.split(",") if s.strip()]

    from apps.repos.tests.gitserver import GitServer

    (ROOT / "var").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bindery-bench-workshop-", dir=ROOT / "var"))
    git = GitServer()
    repo = git.create_repo("class/bench", {"requirements.txt": "tabulate==0.9.0\n",
                                           "index.ipynb": "{}"})  # fmt: skip
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            print(f"keeping {root} (stack.log: the portal's processes)")
        else:
            cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        cleanup.callback(git.close)
        database = ""
        if os.environ.get("DATABASE_URL", "").startswith("postgres"):
            database = cleanup.enter_context(
                throwaway_postgres(os.environ["DATABASE_URL"], f"bench_workshop_{os.getpid()}")
            )
        first = starts[0] if starts else args.seats
        warm_env = {"BINDERY_WORKSHOP_WARM_MAX": str(args.seats),
                    "BINDERY_WORKSHOP_WARM_STARTS": str(first)}  # fmt: skip
        stack = Stack(root, git.host, database_url=database, concurrency=args.concurrency,
                      beat=True, extra=warm_env)  # fmt: skip
        cleanup.callback(stack.stop)
        stack.start()
        setup_django(stack)
        from django.db import connection

        print(f"database: {connection.vendor}; worker concurrency {args.concurrency}; "
              f"{args.seats} seats; arrivals over {args.window:.0f} s; joins via {args.via}",
              flush=True)  # fmt: skip
        instructor = make_instructor()
        web = stack.web if args.via == "api" else ""

        # 1. how long the pool takes to warm, for each WARM_STARTS
        pools: dict[int, dict[str, float]] = {}
        for value in starts:
            if stack.env["BINDERY_WORKSHOP_WARM_STARTS"] != str(value):
                restart_workers(stack, BINDERY_WORKSHOP_WARM_STARTS=str(value))
            workshop = create_workshop(instructor, repo.url, args.seats,
                                       opens_in=timedelta(minutes=5))  # fmt: skip
            pools[value] = timing = warm_pool(workshop, args.seats)
            print(
                f"WARM_STARTS={value:3}: pool warm in {timing['pool']:5.1f} s "
                f"(first warm row {timing['beat']:4.1f} s after it could start; each server "
                f"row → ready p50 {timing['launch_p50']:.1f} s, max "
                f"{timing['launch_max']:.1f} s; {timing['servers']:.0f} started)",
                flush=True,
            )
            close_and_wait(instructor, workshop)
        best = min(pools, key=lambda v: pools[v]["pool"]) if pools else args.seats

        # 2. the warm room
        warm_people: list[Attendee] = []
        cold_people: list[Attendee] = []
        if "warm" in rounds and stack.env["BINDERY_WORKSHOP_WARM_STARTS"] != str(best):
            restart_workers(stack, BINDERY_WORKSHOP_WARM_STARTS=str(best))
        if "warm" in rounds:
            workshop = create_workshop(instructor, repo.url, args.seats,
                                       opens_in=timedelta(minutes=5))  # fmt: skip
            timing = warm_pool(workshop, args.seats)
            print(f"warm round, WARM_STARTS={best}: pool warm in {timing['pool']:.1f} s",
                  flush=True)  # fmt: skip
            workshop = open_now(instructor, workshop)
            warm_people = room(workshop.code, args.seats, args.window, "Warm", web)
            close_and_wait(instructor, workshop)

        # 3. the cold room
        if "cold" in rounds:
            restart_workers(stack, BINDERY_WORKSHOP_WARM_MAX="0")
            workshop = create_workshop(instructor, repo.url, args.seats, opens_in=timedelta(0))
            wait_built(workshop)
            cold_people = room(workshop.code, args.seats, args.window, "Cold", web)
            close_and_wait(instructor, workshop)

        print("\npool warm (from the first warm row to the last server ready):")
        for value, timing in pools.items():
            print(f"  WARM_STARTS={value:3}: {timing['pool']:5.1f} s")
        warm = cold = []
        if warm_people:
            warm = report_room(f"warm seats (WARM_MAX={args.seats}, WARM_STARTS={best})",
                               warm_people)  # fmt: skip
        if cold_people:
            cold = report_room("cold seats (WARM_MAX=0)", cold_people)
        lost = [p for p in warm_people + cold_people if p.error]
        if warm:
            p50, p95 = statistics.median(warm), percentile(warm, 0.95)
            met = p50 <= GOAL_P50 and p95 <= GOAL_P95 and len(warm) == len(warm_people)
            verdict = "meets" if met else "misses"
            print(f"\nwarm p50 {p50:.2f} s, p95 {p95:.2f} s: {verdict} the goal "
                  f"(p50 ≤ {GOAL_P50:.0f} s, p95 ≤ {GOAL_P95:.0f} s, none lost)")  # fmt: skip
        if cold:
            print(f"cold p50 {statistics.median(cold):.2f} s, p95 {percentile(cold, 0.95):.2f} s")
        if lost:
            print(f"{len(lost)} attendees lost")
        connection.close()


if __name__ == "__main__":
    main()
