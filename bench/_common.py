"""What the benchmarks share: free ports, waiting, percentiles, and ``Stack``, the portal's
processes (embedded Redis, ``manage.py runhub``, daphne, a Celery worker, optionally beat)
on free loopback ports with every directory under one temporary root."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    embedded server of the stack's own. The worker runs as the Procfile's does (threads pool);
    ``concurrency`` is its number of threads (0: the settings' CELERY_WORKER_CONCURRENCY);
    ``beat`` adds Celery beat as a thread of it (the schedule of portal/settings.py).
    ``extra`` is more environment for every process; :meth:`restart_celery` restarts the
    worker (and beat) with changes."""

    def __init__(
        self,
        root: Path,
        git_host: str,
        *,
        database_url: str = "",
        concurrency: int = 0,
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
        # as the Procfile runs it: one process, tasks in threads (the settings' number unless
        # ``concurrency`` is given), beat a thread of it (portal/beat_thread.py)
        beat = ["--beat-thread", f"--schedule={self.root / 'celerybeat-schedule'}"]
        self.celery.append(self._spawn(
            [celery, "-A", "portal", "worker", "--pool=threads",
             *([f"--concurrency={self.concurrency}"] if self.concurrency else []),
             "--without-mingle", "--without-gossip", "--loglevel=WARNING",
             *(beat if self.beat else [])]
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


# --- a bare server from a built environment (bench/launch.py, bench/load.py) ---------------


def built_environment(
    stack: Stack, web: str, token: str, session: dict[str, Any]
) -> tuple[Path, Path]:
    """The environment directory and the repository checkout the build of ``session`` (an
    API session of the user of ``token``) made, on the stack's disk."""
    detail = requests.get(f"http://{web}/api/v1/builds/{session['build']}/",
                          headers={"Authorization": f"token {token}"}, timeout=10)  # fmt: skip
    detail.raise_for_status()
    var = Path(stack.env["BINDERY_VAR_DIR"])
    env_path = var / "build" / "envs" / detail.json()["environment_key"]
    checkout = next(p for p in (var / "checkouts").glob("*/*") if p.is_dir())
    return env_path, checkout


# ``jupyter-server`` as its entry point runs it, but importing JupyterLab without the yarn
# run, as the portal's lean start does (apps/sessions/backends/local/lean_singleuser.py's
# LabAppWithoutYarn): the floor for a server start that skips the same run.
SKIPPING_YARN = (
    "import runpy, sys; "
    f"runpy.run_path({str(ROOT / 'apps/sessions/backends/local/lean_singleuser.py')!r}, "
    "run_name='bindery_bench')['without_yarn_at_import'](); "
    "sys.argv[0] = 'jupyter-server'; from jupyter_server.serverapp import main; sys.exit(main())"
)


def bare_command(env_path: Path, port: int, token: str, floor: bool = False) -> list[str]:
    """``jupyter-server`` of ``env_path`` on 127.0.0.1:``port`` with ``token``: no hub, no
    sandbox, no cgroups; with ``floor``, importing JupyterLab without its yarn run
    (``SKIPPING_YARN``)."""
    server = env_path / "bin" / "jupyter-server"
    if floor:
        head = [str(env_path / "bin" / "python"), "-c", SKIPPING_YARN]
    elif server.exists():
        head = [str(server)]
    else:
        head = [str(env_path / "bin" / "jupyter"), "server"]
    return [*head, "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
            f"--ServerApp.token={token}", "--allow-root"]  # fmt: skip


def start_bare(
    env_path: Path, cwd: Path, home: Path, log: Path, floor: bool = False
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Spawn a bare server in ``cwd`` (``HOME`` = ``home``; ``floor``: see
    ``bare_command``); returns it, its ``/api/status`` URL and its token. Time it from just
    before this call."""
    port, token = free_port(), os.urandom(16).hex()
    env = {**os.environ, "HOME": str(home), "PATH": f"{env_path / 'bin'}:{os.environ['PATH']}"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
                 "JUPYTER_RUNTIME_DIR", "DJANGO_SETTINGS_MODULE"):  # fmt: skip
        env.pop(name, None)
    with open(log, "ab") as out:
        process = subprocess.Popen(bare_command(env_path, port, token, floor), cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    return process, f"http://127.0.0.1:{port}/api/status", token


def wait_bare(process: subprocess.Popen[bytes], status_url: str, token: str,
              timeout: float = 120, every: float = 0.05) -> bool:  # fmt: skip
    """Poll ``status_url`` with ``token`` until it answers 200 (True), the server exits or
    ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"token {token}"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(requests.RequestException):
            if requests.get(status_url, headers=headers, timeout=5).status_code == 200:
                return True
        time.sleep(every)
    return False


def kill_bare(process: subprocess.Popen[bytes]) -> None:
    """End a bare server (its process group): SIGTERM, then SIGKILL after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- launches through the portal's API, and what the stack's database says of them --------


def api_launch(web: str, token: str, repo_url: str, timeout: float = 240) -> dict[str, Any]:
    """``POST /api/v1/sessions/`` as the user of ``token``, then its event stream to
    ``ready``. Returns ``session`` (the API's answer), ``elapsed`` (seconds, request →
    ready seen), ``sent`` and ``seen`` (wall clock, for the database's timestamps) and
    ``error`` ("" when ready); never raises for a failed launch."""
    headers = {"Authorization": f"token {token}"}
    out: dict[str, Any] = {"session": None, "elapsed": 0.0, "error": "", "sent": time.time()}
    started = time.perf_counter()
    try:
        created = requests.post(f"http://{web}/api/v1/sessions/", json={"repo_url": repo_url},
                                headers=headers, timeout=60)  # fmt: skip
        if created.status_code != 201:
            out["error"] = f"POST answered {created.status_code}: {created.text[:200]}"
            return out
        out["session"] = session = created.json()
        with requests.get(f"http://{web}{session['links']['events']}", stream=True,
                          timeout=timeout, headers={**headers, "Accept": "text/event-stream"},
                          ) as stream:  # fmt: skip
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["phase"] == "ready":
                        out["elapsed"], out["seen"] = time.perf_counter() - started, time.time()
                        return out
                    if event["phase"] == "failed":
                        out["error"] = f"failed: {event['message'].strip()}"
                        return out
        out["error"] = "the event stream ended before ready"
    except requests.RequestException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def api_stop(web: str, token: str, session_id: int, wait: float = 120) -> bool:
    """``DELETE /api/v1/sessions/<id>/``, then wait until it is stopped (or failed)."""
    headers = {"Authorization": f"token {token}"}
    url = f"http://{web}/api/v1/sessions/{session_id}/"
    requests.delete(url, headers=headers, timeout=30)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            status = requests.get(url, headers=headers, timeout=5).json()["status"]
            if status in ("stopped", "failed"):
                return True
        time.sleep(0.2)
    return False


SESSION_ROWS = """
import json
from apps.sessions.models import Session
rows = []
for s in Session.objects.order_by("id").prefetch_related("events"):
    stamp = lambda t: t.timestamp() if t else None
    rows.append({"id": s.pk, "user": s.user_id, "anonymous": bool(s.anonymous_owner),
                 "status": s.status, "created": stamp(s.created_at),
                 "claimed": stamp(s.launch_started_at), "ready_at": stamp(s.ready_at),
                 "handed": stamp(getattr(s, "handed_over_at", None)),
                 "events": [[e.phase, e.message, stamp(e.created_at)] for e in s.events.all()]})
print(json.dumps(rows))
"""


def session_rows(stack: Stack) -> dict[int, dict[str, Any]]:
    """Every session of the stack's database with its events (one ``manage.py shell``):
    ``{id: {created, claimed, ready_at, handed, events: [[phase, message, epoch s]]...}}``
    (``handed``: when a kept-ready server was handed over, where the model has it)."""
    out = stack.manage("shell", "-c", SESSION_ROWS).strip().splitlines()[-1]
    return {row["id"]: row for row in json.loads(out)}


def hub_listening_times(stack: Stack) -> list[float]:
    """The spawner's "<server> is listening after N.NNs" figures from the stack's log."""
    text = (stack.root / "stack.log").read_text(errors="replace")
    return [float(m) for m in re.findall(r"is listening after ([0-9.]+)s", text)]
