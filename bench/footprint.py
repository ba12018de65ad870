"""Benchmark: the memory all of Bindery's processes hold when idle on one machine.

Run with ``.venv/bin/python bench/footprint.py [--procfile Procfile] [--processes ...]
[--keep]`` from the project root. The goal (issue 13): every portal process together
≤ 600 MB when idle.

- Started as ``make run`` starts them (``bin/run``): migrations, then honcho running the
  Procfile's processes that bin/run names, and the embedded Redis (REDIS_URL is left unset),
  with every directory under one temporary root and free loopback ports (``bench/_common.py``'s
  ``Stack`` environment). The database is a throwaway one on DATABASE_URL's PostgreSQL
  server when that names one, else SQLite under the root.
- Idle: ``/health`` answers 200 (database, Redis, a live worker, the hub), then the total
  proportional set size is sampled every 2 s until five samples in a row stay within 2 %
  of each other (beat's first round of tasks has run in the worker by then).
- Counted: every process that carries this run's marker in its environment, which every
  child inherits, and everything below honcho: honcho, each Procfile process and its
  children (Celery's pool, the hub's proxy), and the hub's watchdog, which double-forks out
  of the tree; each is put under the Procfile process honcho started it as.
Prints, per process, RSS and PSS (``/proc/<pid>/smaps_rollup``; RSS counts pages that
forked children share once per process, PSS divides them among the sharers, so only PSS
adds up), the totals, and the totals per Procfile process, against the goal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests
from _common import ROOT, Stack, throwaway_postgres, wait_until

MARKER = "BINDERY_FOOTPRINT_RUN"
GOAL = 600 * 2**20  # issue 13: every portal process together, idle


def make_run_processes() -> list[str]:
    """The Procfile processes ``bin/run`` starts (its ``processes="..."`` line), and the
    embedded Redis, as it adds when REDIS_URL is unset."""
    for line in (ROOT / "bin" / "run").read_text().splitlines():
        if line.startswith("processes="):
            return ["redis", *line.partition("=")[2].strip("\"'").split()]
    return ["redis", "web", "worker", "beat", "hub"]


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def descendants(root: int) -> set[int]:
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                todo.extend(c for c in children if c not in found)
                found.update(children)
    return found


def ours(run: str, root: int | None) -> list[int]:
    """The run's processes: those with its marker in their environment, which every child
    inherits (the hub's watchdog leaves the tree), and whatever descends from ``root``
    (Redis overwrites its environment with its process title)."""
    needle = f"{MARKER}={run}".encode()
    pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    found = {pid for pid in pids if pid != os.getpid() and _environ_has(pid, needle)}
    if root is not None:
        found |= {root} | descendants(root)
    return sorted(found)


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def memory(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) in bytes; PSS None where smaps_rollup cannot be read."""
    rss = int(_status(pid).get("VmRSS", "0 kB").split()[0]) * 1024
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return rss, None
    pss = next((int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:")), None)
    return rss, pss


def argv_of(pid: int) -> list[str]:
    return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split(
        "\0") if a]  # fmt: skip


def command_of(pid: int) -> str:
    return " ".join(w.replace(str(ROOT) + "/", "") for w in argv_of(pid))[:90]


def group_of(pid: int) -> str:
    """The Procfile process ``pid`` is or descends from: honcho names each in its
    environment (``HONCHO_PROCESS_NAME=web.1``), which children inherit."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "?"
    for item in environ:
        if item.startswith(b"HONCHO_PROCESS_NAME="):
            return item.split(b"=", 1)[1].decode().removesuffix(".1")
    argv = argv_of(pid)
    if any(a.endswith("honcho") for a in argv[:2]):
        return "honcho"
    if argv and "redis-server" in argv[0]:  # its process title overwrote its environment
        return "redis"
    return "other"


def sample(run: str, root: int) -> list[tuple[int, int, int | None]]:
    rows = []
    for pid in ours(run, root):
        with contextlib.suppress(OSError, ValueError):
            rows.append((pid, *memory(pid)))
    return rows


def settled(run: str, root: int, timeout: float) -> list[tuple[int, int, int | None]]:
    """Samples every 2 s until five in a row agree within 2 % (by PSS, else RSS)."""
    totals: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        rows = sample(run, root)
        totals.append(sum((pss if pss is not None else rss) for _, rss, pss in rows))
        last = totals[-5:]
        if len(last) == 5 and max(last) <= min(last) * 1.02:
            return rows
        if time.monotonic() > deadline:
            print("warning: memory did not settle; the last sample follows", file=sys.stderr)
            return rows
        time.sleep(2)  # the measurement's sampling interval, not a synchronisation


@contextlib.contextmanager
def database(root: Path) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        with throwaway_postgres(url, f"bench_footprint_{os.getpid()}") as made:
            yield made
    else:
        yield ""  # SQLite under the root


def mb(value: int | None) -> str:
    return "     -" if value is None else f"{value / 2**20:6.0f}"


def report(rows: list[tuple[int, int, int | None]]) -> None:
    print(f"{'process':12} {'pid':>7} {'RSS MB':>7} {'PSS MB':>7}  command")
    groups: dict[str, list[int]] = {}
    named = sorted((group_of(pid), pid, rss, pss) for pid, rss, pss in rows)
    for group, pid, rss, pss in named:
        groups.setdefault(group, [0, 0, 0])
        groups[group][0] += 1
        groups[group][1] += rss
        groups[group][2] += pss or 0
        with contextlib.suppress(OSError):
            print(f"{group:12} {pid:7} {mb(rss):>7} {mb(pss):>7}  {command_of(pid)}")
    print("\nper Procfile process (with its children):")
    for group, (count, rss, pss) in groups.items():
        print(f"  {group:12} {count:2} process(es)  RSS {mb(rss)} MB  PSS {mb(pss)} MB")
    total_rss = sum(r for _, r, _ in rows)
    total_pss = sum(p or 0 for _, _, p in rows)
    incomplete = "" if all(p is not None for _, _, p in rows) else " (incomplete)"
    print(f"\n{len(rows)} processes: RSS {total_rss / 2**20:.0f} MB (shared pages counted per "
          f"process), PSS {total_pss / 2**20:.0f} MB{incomplete}")  # fmt: skip
    for what, total in (("RSS", total_rss), ("PSS", total_pss)):
        verdict = "within" if total <= GOAL else "over"
        print(f"  {what}: {verdict} the goal of {GOAL / 2**20:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procfile", type=Path, default=ROOT / "Procfile")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--processes", nargs="+", default=make_run_processes(),
                        help="Procfile processes to start (default: bin/run's)")  # fmt: skip
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    run = uuid.uuid4().hex
    with database(root) as url:
        stack = Stack(root, "127.0.0.1", database_url=url)
        host, port = stack.web.split(":")
        stack.env.update({MARKER: run, "BINDERY_HOST": host, "BINDERY_PORT": port})
        stack.manage("migrate", "-v", "0")
        log = open(root / "honcho.log", "ab")  # noqa: SIM115 - closed below
        honcho = subprocess.Popen(
            [str(ROOT / ".venv/bin/honcho"), "-f", str(args.procfile.resolve()), "-d", str(ROOT),
             "start", *args.processes],
            cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            started = time.monotonic()
            wait_until(lambda: requests.get(f"http://{stack.web}/health", timeout=5).ok,
                       args.timeout, "/health to answer 200")  # fmt: skip
            print(f"healthy after {time.monotonic() - started:.0f} s; waiting for memory to settle")
            rows = settled(run, honcho.pid, args.timeout)
            print(f"settled after {time.monotonic() - started:.0f} s ({args.procfile.name})\n")
            report(rows)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(honcho.pid, signal.SIGTERM)
            try:
                honcho.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
            log.close()
            wait_until(lambda: not ours(run, None), 60, "every process of the run to end")
    if args.keep:
        print(f"kept {root} (honcho.log: every process's output)")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
