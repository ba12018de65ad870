"""What the benchmarks share: free ports, waiting, percentiles, and ``Stack``, the portal's
processes (embedded Redis, ``manage.py runhub``, daphne, a Celery worker, optionally beat)
on free loopback ports with every directory under one temporary root."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def throwaway_postgres(url: str, name: str) -> Iterator[str]:
    """A fresh database ``name`` on the PostgreSQL server of ``url``, dropped afterwards;
    yields its URL."""
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:  # CREATE DATABASE needs autocommit
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class Stack:
    """The portal's processes on free ports, with every directory under ``root``.

    The database is SQLite under ``root`` unless ``database_url`` names one; Redis is an
    embedded server of the stack's own. ``concurrency`` is the worker's; ``beat`` adds
    Celery beat (the schedule of portal/settings.py). ``extra`` is more environment for
    every process; :meth:`restart_celery` restarts the worker (and beat) with changes."""

    def __init__(
        self,
        root: Path,
        git_host: str,
        *,
        database_url: str = "",
        concurrency: int = 2,
        beat: bool = False,
        extra: dict[str, str] | None = None,
    ):
        self.root = root
        self.concurrency = concurrency
        self.beat = beat
        self.web = f"127.0.0.1:{free_port()}"
        hub_public = free_port()
        while True:  # the proxy's own API takes public port + 1
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", hub_public + 1))
                break
            except OSError:
                hub_public = free_port()
        self.env = {
            **os.environ,
            "BINDERY_VAR_DIR": str(root / "var"),
            "BINDERY_UV_CACHE_DIR": str(ROOT / "var" / "build" / "uv-cache"),
            "BINDERY_UV_OFFLINE": "true",
            "BINDERY_ALLOWED_GIT_HOSTS": git_host,
            "BINDERY_HUB_BIND": f"127.0.0.1:{hub_public}",
            "BINDERY_HUB_API_BIND": f"127.0.0.1:{free_port()}",
            "BINDERY_SITE_URL": f"http://{self.web}",
            "BINDERY_MAX_SESSIONS_PER_USER": "5",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
        self.env.pop("REDIS_URL", None)
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self.celery: list[subprocess.Popen[bytes]] = []
        self._log = None

    def manage(self, *args: str) -> str:
        done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self._log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def start(self) -> None:
        self.manage("migrate", "-v", "0")
        self._log = open(self.root / "stack.log", "ab")  # noqa: SIM115 - lives as long as the stack
        for command in (
            [PYTHON, "manage.py", "embedded_redis"],
            [PYTHON, "manage.py", "runhub"],
            [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", self.web.split(":")[1],
             "portal.asgi:application"],
        ):  # fmt: skip
            self.processes.append(self._spawn(command))
        self._start_celery()
        wait_until(lambda: requests.get(f"http://{self.web}/health", timeout=2).ok, 90,
                   "the portal's /health")  # fmt: skip

    def _start_celery(self) -> None:
        celery = str(ROOT / ".venv/bin/celery")
        self.celery.append(self._spawn(
            [celery, "-A", "portal", "worker", f"--concurrency={self.concurrency}",
             "--without-mingle", "--without-gossip", "--loglevel=WARNING"]
        ))  # fmt: skip
        if self.beat:
            self.celery.append(self._spawn(
                [celery, "-A", "portal", "beat", "--loglevel=WARNING",
                 f"--schedule={self.root / 'celerybeat-schedule'}"]
            ))  # fmt: skip

    def restart_celery(self, **changes: str) -> None:
        """Stop the worker (and beat) after their running tasks, and start them again with
        ``changes`` in their environment (what they have queued stays in Redis)."""
        _stop_all(self.celery)
        self.celery = []
        self.env.update(changes)
        self._start_celery()

    def stop(self) -> None:
        _stop_all(self.processes + self.celery)  # the worker first, Redis last
        if self._log is not None:
            self._log.close()


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
