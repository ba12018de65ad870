"""Benchmark: a warm launch through the portal, two ways, against the bare server it starts.

Run with ``.venv/bin/python bench/launch.py [launches] [--hot N] [--keep]`` (default 10
rounds) from the project root, ideally with nothing else busy (run ``bin/warm-test-cache``
first). Everything runs on 127.0.0.1 in a temporary directory: a git server with a small
repository and the portal's processes (``bench/_common.py``'s ``Stack``: embedded Redis,
daphne, a Celery worker, ``manage.py runhub``), with ``BINDERY_ANONYMOUS_LAUNCH`` on.

- Warm-up: one launch through the API builds the environment (uv, offline from the shared
  cache); one launch of each kind below then warms the page cache.
- Each round runs the four kinds one after the other (alternating, so that a change in the
  machine's load falls on all four):

  - portal: a signed-in user with a personal API token, ``POST /api/v1/sessions/`` with the
    repository URL → the session's event stream says ``ready`` (resolving the ref, the quota
    check, the build lookup, the Celery task, the hub, the spawner's working copy, sandbox
    and cgroups, the server start, the token). Stopped (``DELETE``) before the next.
  - visitor: an anonymous visitor (a cookie session, no account) through the
    mybinder-compatible event stream, ``GET /build/git/<url-escaped repo URL>/main`` with
    ``Accept: text/event-stream`` as mybinder's clients do → its ``ready`` event (which
    carries the server's URL and token). Stopped as its browser would (``POST
    /sessions/<id>/stop/`` with the CSRF token) before the next.
  - bare: the same environment's ``jupyter-server --no-browser --ip 127.0.0.1 --port P
    --ServerApp.token=T --allow-root`` started by hand in a copy of the checkout (no hub,
    no sandbox, no cgroups) → ``GET /api/status`` with the token answers 200; then killed.
  - floor: the same, importing JupyterLab without the ``node yarn.js config --json`` run
    its import makes, as the portal's lean start does (``_common.SKIPPING_YARN``): bare
    is the target's measure, the floor what the portal's own start could reach.

Prints every round; per kind p50, p95 and all; the ratios of portal and visitor p50s to the
bare p50 (target: portal p50 ≤ 1.2 x bare); a per-phase breakdown (medians) of the portal
and visitor launches from the stack's database (``SessionEvent.created_at``, read once at
the end with ``manage.py shell``; the spawner's events are stamped when the Celery task reads
them from the hub's progress stream); and the median of the spawner's own "is listening
after N s" lines in the hub's log (its ``start()``, working copy to port open).

``--hot N`` sets ``BINDERY_HOT_SERVERS=N`` on the stack and runs Celery beat (servers kept
ready for visitors, apps/sessions/hot.py, being built: when it has no effect yet, the figures
are those of a plain run); visitor launches handed a ready server show no spawner events.
Without it (``--hot 0``) the stack has ``BINDERY_HOT_SERVERS=0``: every launch starts a
server. ``--keep`` keeps the temporary directory (``stack.log``: every process's output).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from _common import (
    ROOT,
    Stack,
    api_launch,
    api_stop,
    built_environment,
    hub_listening_times,
    kill_bare,
    percentile,
    session_rows,
    start_bare,
    wait_bare,
)

TARGET_RATIO = 1.2  # portal warm launch p50 ≤ 1.2 x the bare server's
CSRF_COOKIE = "bindery_csrftoken"  # portal/settings.py CSRF_COOKIE_NAME


def portal_launch(web: str, token: str, repo_url: str) -> dict[str, Any]:
    result = api_launch(web, token, repo_url)
    if result["error"]:
        sys.exit(f"portal launch failed: {result['error']}")
    return result


def visitor_launch(web: str, http: requests.Session, path: str) -> dict[str, Any]:
    """``GET /build/...`` as an anonymous visitor's client → its ``ready`` event."""
    sent, started = time.time(), time.perf_counter()
    headers = {"Accept": "text/event-stream"}
    with http.get(f"http://{web}{path}", headers=headers, stream=True, timeout=240) as stream:
        if stream.status_code != 200:
            sys.exit(f"visitor launch answered {stream.status_code}: {stream.text[:300]}")
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                event = json.loads(line[6:])
                if event["phase"] == "ready":
                    elapsed, seen = time.perf_counter() - started, time.time()
                    break
                if event["phase"] == "failed":
                    sys.exit(f"visitor launch failed: {event['message'].strip()}")
        else:
            sys.exit("the /build/ event stream ended before ready")
    found = re.search(r"/user/[^/]+/s([0-9]+)/", event["url"])
    if found is None:
        sys.exit(f"no session id in the ready event's url {event['url']!r}")
    return {"elapsed": elapsed, "sent": sent, "seen": seen, "id": int(found.group(1))}


def visitor_stop(web: str, http: requests.Session, session_id: int, spec: str) -> None:
    """``POST /sessions/<id>/stop/`` as the visitor's browser, with the CSRF cookie of the
    repository's /v2/ page, then the session's page until it says the session has ended."""
    page = f"http://{web}/sessions/{session_id}/"
    if CSRF_COOKIE not in http.cookies:
        http.get(f"http://{web}/v2/{spec}", timeout=30).raise_for_status()
    csrf = http.cookies.get(CSRF_COOKIE, "")
    stopped = http.post(f"{page}stop/", data={"csrfmiddlewaretoken": csrf}, timeout=30,
                        headers={"X-CSRFToken": csrf, "Referer": page},
                        allow_redirects=False)  # fmt: skip
    if stopped.status_code != 302:
        sys.exit(f"the visitor's stop answered {stopped.status_code}: {stopped.text[:300]}")
    deadline = time.monotonic() + 120
    while "This session has ended" not in http.get(page, timeout=30).text:
        if time.monotonic() > deadline:
            sys.exit(f"visitor session {session_id} did not stop")
        time.sleep(0.2)


def bare_launch(env_path: Path, checkout: Path, root: Path, floor: bool = False) -> float:
    started = time.perf_counter()
    process, status_url, token = start_bare(env_path, checkout, root / "bare-home",
                                            root / "bare.log", floor)  # fmt: skip
    try:
        if not wait_bare(process, status_url, token):
            sys.exit(f"the bare server did not answer (see {root / 'bare.log'})")
        return time.perf_counter() - started
    finally:
        kill_bare(process)


def report(label: str, times: list[float]) -> float:
    p50 = statistics.median(times)
    print(f"{label:8} p50 {p50:6.2f} s   p95 {percentile(times, 0.95):6.2f} s   "
          f"({', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip
    return p50


# (label, how to find the step's moment in a session's row: a key of the row, an event's
# message prefix, or the ready event)
STEPS = [
    ("row created (request → session row)", "created"),
    ("task claimed (launch_started_at)", "claimed"),
    ('"Starting your server." (hub start asked)', "msg:Starting your server."),
    ('"Preparing your copy…" (spawner start)', "msg:Preparing your copy"),
    ('"Starting the server (…)" (copy, cgroups)', "msg:Starting the server"),
    ('"The server is up…" (port open)', "msg:The server is up"),
    ("ready event (token, row saved)", "ready"),
    ("client sees ready", "seen"),
]


def moments(row: dict[str, Any], launch: dict[str, Any]) -> list[float | None]:
    out: list[float | None] = []
    for _, key in STEPS:
        if key in ("created", "claimed"):
            out.append(row[key])
        elif key == "seen":
            out.append(launch["seen"])
        elif key == "ready":
            out.append(next((e[2] for e in row["events"] if e[0] == "ready"), None))
        else:
            prefix = key[4:]
            out.append(next((e[2] for e in row["events"] if e[1].startswith(prefix)), None))
    return out


def breakdown(label: str, launches: list[dict[str, Any]], rows: dict[int, dict[str, Any]]) -> None:
    """Medians of each step since the one before it present, from the request sent."""
    gaps: list[list[float]] = [[] for _ in STEPS]
    totals: list[float] = []
    handed: list[float] = []
    for launch in launches:
        row = rows.get(launch["id"])
        if row is None:
            continue
        if row.get("handed"):  # a kept-ready server: its row and start predate the request
            handed.append(launch["seen"] - launch["sent"])
            continue
        previous = launch["sent"]
        for i, moment in enumerate(moments(row, launch)):
            if moment is not None:
                gaps[i].append(moment - previous)
                previous = moment
        totals.append(launch["seen"] - launch["sent"])
    print(f"\n{label}: per-phase medians (each since the step before it; "
          f"{len(totals)} launches)")  # fmt: skip
    for (name, _), values in zip(STEPS, gaps, strict=True):
        shown = f"{statistics.median(values):6.3f} s" if values else "     —  "
        missing = f"   (in {len(values)} of {len(totals)})" if len(values) != len(totals) else ""
        print(f"  → {name:44} {shown}{missing}")
    if totals:
        print(f"  = {'request → client sees ready':44} {statistics.median(totals):6.3f} s")
    if handed:
        print(f"  (and {len(handed)} handed a ready server, not above: request → ready "
              f"p50 {statistics.median(handed):.3f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("launches", nargs="?", type=int, default=10, help="rounds")
    parser.add_argument("--hot", type=int, default=0,
                        help="BINDERY_HOT_SERVERS for the stack (and Celery beat on)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    from apps.repos.tests.gitserver import GitServer

    (ROOT / "var").mkdir(exist_ok=True)  # a fresh clone has none yet
    root = Path(tempfile.mkdtemp(prefix="bindery-bench-launch-", dir=ROOT / "var"))
    git = GitServer()
    repo = git.create_repo("lab/bench", {"requirements.txt": "tabulate==0.9.0\n",
                                         "index.ipynb": "{}"})  # fmt: skip
    # a visitor may hold more than one session while the last one is still stopping
    extra = {"BINDERY_ANONYMOUS_LAUNCH": "true", "BINDERY_MAX_SESSIONS_ANONYMOUS": "3",
             "BINDERY_HOT_SERVERS": str(args.hot)}  # fmt: skip
    stack = Stack(root, git.host, beat=bool(args.hot), extra=extra)
    spec = f"git/{quote(repo.url, safe='')}/main"
    build_path = f"/build/{spec}"
    try:
        stack.start()
        stack.manage("shell", "-c", "from apps.accounts.models import User; "
                     "User.objects.create_user('bench', 'bench@example.org', 'x')")  # fmt: skip
        token = stack.manage("create_api_token", "bench").strip().splitlines()[-1]
        print(f"hot servers: {args.hot or 'off'}; warming up: the first launch builds the "
              "environment …", flush=True)  # fmt: skip
        cold = portal_launch(stack.web, token, repo.url)
        print(f"cold launch (build + launch): {cold['elapsed']:.1f} s", flush=True)
        api_stop(stack.web, token, cold["session"]["id"])
        env_path, source = built_environment(stack, stack.web, token, cold["session"])
        checkout = root / "bare-checkout"
        shutil.copytree(source, checkout, ignore=shutil.ignore_patterns(".git"))
        (root / "bare-home").mkdir()
        visitor = requests.Session()
        warm = portal_launch(stack.web, token, repo.url)
        api_stop(stack.web, token, warm["session"]["id"])
        visitor_stop(stack.web, visitor, visitor_launch(stack.web, visitor, build_path)["id"], spec)
        bare_launch(env_path, checkout, root)
        bare_launch(env_path, checkout, root, floor=True)

        portal: list[dict[str, Any]] = []
        visitors: list[dict[str, Any]] = []
        bare: list[float] = []
        floor: list[float] = []
        for i in range(args.launches):
            launch = portal_launch(stack.web, token, repo.url)
            launch["id"] = launch["session"]["id"]
            portal.append(launch)
            api_stop(stack.web, token, launch["id"])
            visitors.append(visitor_launch(stack.web, visitor, build_path))
            visitor_stop(stack.web, visitor, visitors[-1]["id"], spec)
            bare.append(bare_launch(env_path, checkout, root))
            floor.append(bare_launch(env_path, checkout, root, floor=True))
            print(f"round {i + 1:2}: portal {portal[-1]['elapsed']:.2f} s   "
                  f"visitor {visitors[-1]['elapsed']:.2f} s   bare {bare[-1]:.2f} s   "
                  f"floor {floor[-1]:.2f} s", flush=True)  # fmt: skip
        rows = session_rows(stack)
        listening = hub_listening_times(stack)
        load = os.getloadavg()

        print()
        portal_p50 = report("portal", [p["elapsed"] for p in portal])
        visitor_p50 = report("visitor", [v["elapsed"] for v in visitors])
        bare_p50 = report("bare", bare)
        floor_p50 = report("floor", floor)
        print(f"ratio of p50s: portal / bare {portal_p50 / bare_p50:.2f}   "
              f"visitor / bare {visitor_p50 / bare_p50:.2f}")  # fmt: skip
        print(f"  against the floor (bare without JupyterLab's yarn run, which the portal's "
              f"start skips too): portal {portal_p50 / floor_p50:.2f}   "
              f"visitor {visitor_p50 / floor_p50:.2f}")  # fmt: skip
        verdict = "meets" if portal_p50 <= TARGET_RATIO * bare_p50 else "misses"
        print(f"portal warm launch p50 {portal_p50:.2f} s {verdict} the target "
              f"(≤ {TARGET_RATIO} x bare p50 = {TARGET_RATIO * bare_p50:.2f} s)")  # fmt: skip
        breakdown("portal (API)", portal, rows)
        breakdown("visitor (/build/)", visitors, rows)
        handed = sum(1 for v in visitors if rows.get(v["id"], {}).get("handed"))
        if args.hot or handed:
            print(f"visitor launches handed a ready server: {handed} of {len(visitors)}")
        if listening:
            print(f"\nhub log, the spawner's \"is listening after\": median "
                  f"{statistics.median(listening):.2f} s over {len(listening)} starts "
                  f"(min {min(listening):.2f}, max {max(listening):.2f}; "
                  "warm-ups included)")  # fmt: skip
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
              f"({os.cpu_count()} cores)")  # fmt: skip
    finally:
        stack.stop()
        git.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
