"""Benchmark: many launches at once through the portal, against as many bare servers at once.

Run with ``.venv/bin/python bench/load.py [--launches 20] [--users 7] [--pool threads]
[--concurrency 4] [--keep]`` from the project root, ideally with nothing else busy (run
``bin/warm-test-cache`` first). Everything runs on 127.0.0.1 in a temporary directory: a git
server with a small repository and the portal's processes (``bench/_common.py``'s ``Stack``:
embedded Redis, daphne, a Celery worker and ``manage.py runhub``); the worker is as the
Procfile's, one process running tasks in threads (``--concurrency`` of them, by default the
settings' ``CELERY_WORKER_CONCURRENCY``), or with ``--pool prefork`` prefork with
``--concurrency`` processes (4 by default). The limits are raised so that nothing is refused:
``BINDERY_MAX_SESSIONS_PER_USER`` and ``BINDERY_MAX_SESSIONS_PER_PERSON`` = ``--launches``
(the quota engine's user default and person bound, apps/quotas/limits.py).

1. Warm-up: one launch through the API builds the environment (uv, offline from the shared
   cache), and is stopped.
2. Portal burst: ``--launches`` threads, spread over ``--users`` signed-in users with
   personal API tokens, wait at a barrier, then each ``POST /api/v1/sessions/`` with the
   repository URL and follows the session's event stream to ``ready``. Timed per launch
   from its request to ``ready``; every launch must get there (the failures are counted and
   listed). Prints p50/p95/max, and the per-phase medians and maxima from the stack's
   database (as bench/launch.py). All the sessions are stopped afterwards.
3. Bare burst: as many ``jupyter-server --no-browser --ip 127.0.0.1 --port P
   --ServerApp.token=T --allow-root`` of the same environment, in one copy of the checkout,
   each on its own port, spawned at once from threads behind a barrier; each timed from its
   spawn to ``GET /api/status`` with its token answering 200. Killed once all answered.
   Then the floor burst: the same, importing JupyterLab without its yarn run as the
   portal's lean start does (``_common.SKIPPING_YARN``).
Prints p50/max of both and the ratio of the maxima (target: portal max ≤ 1.3 x bare max).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
from launch import STEPS, breakdown, moments

TARGET_RATIO = 1.3  # portal max ≤ 1.3 x the bare servers' max

MAKE_USERS = """
import json
from apps.accounts.models import User
from apps.accounts.services import create_api_token
tokens = []
for i in range({users}):
    user = User.objects.create_user(f"load{{i}}", f"load{{i}}@example.org", "x")
    tokens.append(create_api_token(user, "bench", None).secret)
print(json.dumps(tokens))
"""


class PoolStack(Stack):
    """``Stack`` with the worker on Celery's ``threads`` pool when ``pool`` says so (the
    working tree's Procfile: one process, ``CELERY_WORKER_CONCURRENCY`` threads unless
    ``concurrency`` is given)."""

    def __init__(self, *args: Any, pool: str = "prefork", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pool = pool

    def _start_celery(self) -> None:
        if self.pool == "threads":
            return super()._start_celery()
        command = [str(ROOT / ".venv/bin/celery"), "-A", "portal", "worker", f"--pool={self.pool}",
                   f"--concurrency={self.concurrency or 4}", "--without-mingle",
                   "--without-gossip", "--loglevel=WARNING"]  # fmt: skip
        self.celery.append(self._spawn(command))
        return None


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:8} (none)"
    return (f"{label:8} p50 {statistics.median(values):6.2f} s   "
            f"p95 {percentile(values, 0.95):6.2f} s   max {max(values):6.2f} s")  # fmt: skip


def portal_burst(web: str, tokens: list[str], repo_url: str, count: int) -> list[dict[str, Any]]:
    barrier = threading.Barrier(count)
    results: list[dict[str, Any]] = [{} for _ in range(count)]

    def one(i: int) -> None:
        token = tokens[i % len(tokens)]
        barrier.wait()
        results[i] = {**api_launch(web, token, repo_url), "token": token}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def stop_all(web: str, launches: list[dict[str, Any]]) -> int:
    """Stop every session of ``launches`` at once; how many did not end stopped in time."""
    stuck: list[int] = []

    def one(launch: dict[str, Any]) -> None:
        if not api_stop(web, launch["token"], launch["session"]["id"], wait=180):
            stuck.append(launch["session"]["id"])

    threads = [threading.Thread(target=one, args=(la,)) for la in launches if la["session"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(stuck)


def bare_burst(
    env_path: Path, checkout: Path, root: Path, count: int, floor: bool = False
) -> list[float | None]:
    barrier = threading.Barrier(count)
    times: list[float | None] = [None] * count
    processes: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        process, status_url, token = start_bare(env_path, checkout, root / "bare-home",
                                                root / "bare.log", floor)  # fmt: skip
        processes[i] = process
        if wait_bare(process, status_url, token, timeout=240):
            times[i] = time.perf_counter() - started

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        if process is not None:
            kill_bare(process)
    return times


def phase_maxima(launches: list[dict[str, Any]], rows: dict[int, dict[str, Any]]) -> None:
    """The largest gap of each step, and when each launch's Celery task claimed it."""
    gaps: list[list[float]] = [[] for _ in STEPS]
    for launch in launches:
        row = rows.get(launch["id"])
        if row is None:
            continue
        previous = launch["sent"]
        for i, moment in enumerate(moments(row, launch)):
            if moment is not None:
                gaps[i].append(moment - previous)
                previous = moment
    print("  maxima:")
    for (name, _), values in zip(STEPS, gaps, strict=True):
        if values:
            print(f"  → {name:44} {max(values):6.3f} s")
    first = min(launch["sent"] for launch in launches)
    claims = sorted(rows[la["id"]]["claimed"] - first for la in launches
                    if la["id"] in rows and rows[la["id"]]["claimed"])  # fmt: skip
    print("  task claimed, seconds after the first request: "
          + ", ".join(f"{c:.1f}" for c in claims))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--users", type=int, default=7)
    parser.add_argument("--pool", choices=("prefork", "threads"), default="threads",
                        help="the worker's Celery pool")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the worker's processes or threads (prefork: 4; threads: the "
                        "settings' CELERY_WORKER_CONCURRENCY)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    from apps.repos.tests.gitserver import GitServer

    (ROOT / "var").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bindery-bench-load-", dir=ROOT / "var"))
    git = GitServer()
    repo = git.create_repo("lab/load", {"requirements.txt": "tabulate==0.9.0\n",
                                        "index.ipynb": "{}"})  # fmt: skip
    room = str(max(args.launches, 10))
    extra = {"BINDERY_MAX_SESSIONS_PER_USER": room, "BINDERY_MAX_SESSIONS_PER_PERSON": room}
    concurrency = args.concurrency or (4 if args.pool == "prefork" else 0)
    stack = PoolStack(root, git.host, concurrency=concurrency, extra=extra, pool=args.pool)
    launches: list[dict[str, Any]] = []
    try:
        stack.start()
        out = stack.manage("shell", "-c", MAKE_USERS.format(users=args.users))
        tokens = json.loads(out.strip().splitlines()[-1])
        print(f"{args.launches} launches over {args.users} users; worker: {args.pool} pool, "
              f"concurrency {concurrency or 'from the settings'}; warming up: the first launch "
              "builds the environment …", flush=True)  # fmt: skip
        cold = api_launch(stack.web, tokens[0], repo.url)
        if cold["error"]:
            raise SystemExit(f"the warm-up launch failed: {cold['error']}")
        print(f"cold launch (build + launch): {cold['elapsed']:.1f} s", flush=True)
        api_stop(stack.web, tokens[0], cold["session"]["id"])
        env_path, source = built_environment(stack, stack.web, tokens[0], cold["session"])
        checkout = root / "bare-checkout"
        shutil.copytree(source, checkout, ignore=shutil.ignore_patterns(".git"))
        (root / "bare-home").mkdir()
        listened_before = len(hub_listening_times(stack))

        load_before = os.getloadavg()
        launches = portal_burst(stack.web, tokens, repo.url, args.launches)
        load_portal = os.getloadavg()
        ready = [la for la in launches if not la["error"]]
        failed = [la for la in launches if la["error"]]
        for launch in launches:
            launch["id"] = launch["session"]["id"] if launch["session"] else 0
        print(f"\nportal burst: {len(ready)}/{len(launches)} ready, {len(failed)} failed")
        for launch in failed:
            print(f"  FAILED session {launch['id'] or '-'}: {launch['error']}")
        rows = session_rows(stack)
        listening = hub_listening_times(stack)[listened_before:]
        portal_times = [la["elapsed"] for la in ready]
        print(summary("portal", portal_times))
        breakdown("portal burst", ready, rows)
        phase_maxima(ready, rows)
        if listening:
            print(f"  hub log, \"is listening after\": median {statistics.median(listening):.2f}"
                  f" s, max {max(listening):.2f} s over {len(listening)} starts")  # fmt: skip
        stuck = stop_all(stack.web, launches)
        launches = []
        print(f"stopped all sessions{f' ({stuck} not stopped in time)' if stuck else ''}",
              flush=True)  # fmt: skip

        time.sleep(5)  # let the stops' work settle before the next burst
        load_bare_before = os.getloadavg()
        bare = bare_burst(env_path, checkout, root, args.launches)
        load_bare = os.getloadavg()
        bare_times = [t for t in bare if t is not None]
        print(f"\nbare burst: {len(bare_times)}/{len(bare)} answered")
        print(summary("bare", bare_times))
        time.sleep(5)  # as above: the killed servers' exits settle first
        floor = [t for t in bare_burst(env_path, checkout, root, args.launches, floor=True)
                 if t is not None]  # fmt: skip
        print(f"floor burst (bare without JupyterLab's yarn run): {len(floor)}/{len(bare)} "
              "answered")  # fmt: skip
        print(summary("floor", floor))

        print()
        print(summary("portal", portal_times))
        print(summary("bare", bare_times))
        if portal_times and bare_times:
            ratio = max(portal_times) / max(bare_times)
            met = ratio <= TARGET_RATIO and not failed and len(bare_times) == len(bare)
            verdict = "meets" if met else "misses"
            print(f"ratio of maxima (portal / bare): {ratio:.2f}: {verdict} the target "
                  f"(≤ {TARGET_RATIO}, none failed)")  # fmt: skip
            p50s = statistics.median(portal_times) / statistics.median(bare_times)
            print(f"ratio of p50s (portal / bare): {p50s:.2f}")
        if portal_times and floor:
            print(
                f"  against the floor burst (bare without JupyterLab's yarn run, which the "
                f"portal's start skips too): {max(portal_times) / max(floor):.2f}"
            )
        for label, load in (("before the portal burst", load_before),
                            ("after it", load_portal),
                            ("before the bare burst", load_bare_before),
                            ("after it", load_bare)):  # fmt: skip
            print(f"load average {label}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        if launches:
            stop_all(stack.web, launches)
        stack.stop()
        git.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
