"""``manage.py runhub``: write the hub's configuration from settings and exec JupyterHub.

Stopping: the process manager's TERM or INT reaches JupyterHub itself (exec), which stops
every user server and its proxy (``cleanup_servers``, ``cleanup_proxy``). Two things make
that hold when the stop is not clean:

- a watchdog (double-forked, in a session of its own so a process-group KILL misses it)
  notices when the hub loses its supervisor (honcho killed: the hub is reparented), gives
  it time to finish its own cleanup, then stops it; and once the hub is gone, by whatever
  means, it stops the proxy and servers the hub left;
- at start, what a hub killed outright left in ``BINDERY_HUB_DIR`` is stopped first: an
  orphaned hub, its proxy, the servers its database says are running. Only processes
  proven ours are signalled: the pid files and database of this hub directory, checked
  against ``/proc/<pid>`` (the hub's argv names this config file, the proxy's environment
  holds this hub's proxy token, a server's names its hub user and server).

Both are the local backend's (``backend.name == "local"``). With the kubernetes backend the
hub is a pod's main process: the kubelet supervises and restarts it (a watchdog would take
a parent-less process for an orphan), its servers are pods it finds again after a restart
(``cleanup_servers`` is off), and no server is a process here to clean up.
``BINDERY_K8S_KUBECONFIG``, when set, is handed to KubeSpawner as ``KUBECONFIG``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.sessions.backends import get_session_backend
from portal.hubconfig import (
    CONFIG_NAME,
    proxy_api_bind,
    proxy_command,
    python_proxy,
    split_bind,
    write_hub_config,
)

WATCHDOG_PID = "runhub-watchdog.pid"
WATCHDOG_LOG = "runhub-watchdog.log"
ORPHAN_GRACE = 20.0  # s an unsupervised hub has to finish its cleanup (a server: 10 + 5 s)
# (BINDERY_HUB_ORPHAN_GRACE overrides it: tests, and operators whose servers stop slower)
STOP_GRACE = 20.0  # s between TERM and KILL for a hub, the proxy or a server


def _port_taken(bind: str) -> bool:
    host, port = split_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# -- processes, as /proc shows them --------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """A process by pid and start time (a reused pid is another process)."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return cls(pid, int(stat[19])) if stat and stat[0] != "Z" else None

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.started

    def ppid(self) -> int:
        stat = _stat(self.pid)
        return int(stat[1]) if stat else 0

    def argv(self) -> list[str]:
        return [a.decode(errors="replace") for a in self._read("cmdline").split(b"\0") if a]

    def environ(self) -> set[bytes]:
        return set(self._read("environ").split(b"\0"))

    def signal(self, sig: int) -> None:
        if not self.alive():
            return
        # servers and the proxy lead sessions of their own: signal all of it
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def _read(self, name: str) -> bytes:
        try:
            return Path(f"/proc/{self.pid}/{name}").read_bytes()
        except OSError:
            return b""


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_file(path: Path) -> Proc | None:
    try:
        return Proc.of(int(path.read_text().strip()))
    except (OSError, ValueError):
        return None


def _wait_gone(procs: Iterable[Proc], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    procs = list(procs)
    while any(p.alive() for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _stop(procs: list[Proc], first: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """``first``, then KILL to whatever is still alive ``grace`` seconds later."""
    for proc in procs:
        proc.signal(first)
    if not _wait_gone(procs, grace):
        for proc in procs:
            proc.signal(signal.SIGKILL)
        _wait_gone(procs, 5)


# -- what a hub leaves in its directory ----------------------------------------------------


@dataclass(frozen=True)
class HubDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    def hub(self) -> Proc | None:
        """The hub of jupyterhub.pid, when it is one started with this directory's config."""
        proc = _pid_file(self.path / "jupyterhub.pid")
        if proc and "jupyterhub" in proc.argv() and str(self.config) in proc.argv():
            return proc
        return None

    def proxy(self) -> Proc | None:
        """The proxy of proxy.pid, when its environment holds this hub's proxy token."""
        proc = _pid_file(self.path / "proxy.pid")
        try:
            token = (self.path / "proxy_token").read_text().strip().encode()
        except OSError:
            return None
        if not (proc and token and b"CONFIGPROXY_AUTH_TOKEN=" + token in proc.environ()):
            return None
        return proc if any("configurable-http-proxy" in arg for arg in proc.argv()) else None

    def servers(self) -> list[tuple[str, Proc]]:
        """``("user:server", process)`` for each server process the hub's database records
        as running whose environment names that hub user and server."""
        found: list[tuple[str, Proc]] = []
        for user, name, state in self._recorded_servers():
            marks = {f"JUPYTERHUB_USER={user}".encode(), f"JUPYTERHUB_SERVER_NAME={name}".encode()}
            for key in ("pid", "server_pid"):
                proc = Proc.of(int(state.get(key) or 0)) if state.get(key) else None
                if proc and marks <= proc.environ():
                    found.append((f"{user}:{name}", proc))
        return found

    def _recorded_servers(self) -> list[tuple[str, str, dict[str, Any]]]:
        db = self.path / "jupyterhub.sqlite"
        if not db.exists():
            return []
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
                rows = connection.execute(
                    "SELECT users.name, spawners.name, spawners.state FROM spawners"
                    " JOIN users ON spawners.user_id = users.id WHERE spawners.state IS NOT NULL"
                ).fetchall()
        except sqlite3.Error:
            return []
        recorded = []
        for user, name, state in rows:
            try:
                parsed = json.loads(state)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                recorded.append((str(user), str(name or ""), parsed))
        return recorded

    def stop_leftovers(self, say: Callable[[str], None]) -> None:
        """Stop the proxy and servers a hub that is gone left running; forget a pid file
        that names a process that is not ours (JupyterHub would signal it)."""
        servers = self.servers()
        if servers:
            names = ", ".join(sorted({name for name, _ in servers}))
            say(f"stopping servers a previous hub left: {names}")
            _stop([proc for _, proc in servers], first=signal.SIGINT)
        proxy = self.proxy()
        if proxy:
            say(f"stopping the proxy a previous hub left (pid {proxy.pid})")
            _stop([proxy])
        (self.path / "proxy.pid").unlink(missing_ok=True)


def _stop_previous_hub(hub_dir: HubDir, say: Callable[[str], None]) -> Proc | None:
    """Stop a hub of this directory that lost its supervisor (reparented to init) and what
    it leaves. A supervised one is left alone and returned: nothing of it is touched."""
    previous = hub_dir.hub()
    if previous is not None and previous.ppid() != 1:
        return previous
    if previous is not None:
        say(f"stopping a previous hub that lost its supervisor (pid {previous.pid})")
        _stop([previous])  # it stops its servers and proxy itself if it can
    hub_dir.stop_leftovers(say)
    return None


# -- the watchdog --------------------------------------------------------------------------


def _start_watchdog(hub_dir: HubDir, grace: float = ORPHAN_GRACE) -> None:
    """Fork the watchdog for this process (about to become the hub) and return at once; it
    gives a hub that lost its supervisor ``grace`` seconds to end by itself."""
    hub = Proc.of(os.getpid())
    supervisor = Proc.of(os.getppid())
    if hub is None:
        return
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return
    try:  # the first child: a new session, then the watchdog in it, then exit
        os.setsid()
        if os.fork():
            os._exit(0)
        _watch(hub, supervisor, hub_dir, grace)
    except BaseException:
        with open(hub_dir.path / WATCHDOG_LOG, "a") as log:
            traceback.print_exc(file=log)
    finally:
        os._exit(0)


def _watch(hub: Proc, supervisor: Proc | None, hub_dir: HubDir, grace: float) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # not the supervisor's pipe: it would wait for us to close it
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    pid_file = hub_dir.path / WATCHDOG_PID
    pid_file.write_text(str(os.getpid()))
    log = open(hub_dir.path / WATCHDOG_LOG, "a", buffering=1)  # noqa: SIM115

    def say(message: str) -> None:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watchdog of hub {hub.pid}: {message}\n")

    orphaned_at = stopped_at = 0.0
    while hub.alive():
        now = time.monotonic()
        lost = supervisor is None or not supervisor.alive() or hub.ppid() != supervisor.pid
        if lost and not orphaned_at:
            orphaned_at = now
            say(f"the hub lost its supervisor; stopping it in {grace:.0f}s unless it ends")
        if orphaned_at and not stopped_at and now - orphaned_at > grace:
            say("sending SIGTERM to the hub")
            os.kill(hub.pid, signal.SIGTERM)
            stopped_at = now
        if stopped_at and now - stopped_at > STOP_GRACE:
            say("sending SIGKILL to the hub")
            os.kill(hub.pid, signal.SIGKILL)
            _wait_gone([hub], 5)
        time.sleep(0.5)
    hub_dir.stop_leftovers(say)
    pid_file.unlink(missing_ok=True)
    log.close()


class Command(BaseCommand):
    help = "Run JupyterHub and its proxy with the configuration generated from settings."
    requires_system_checks: list[str] = []  # the hub needs no database; start fast

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--write-config",
            action="store_true",
            help="Only write the configuration file and print its path.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["write_config"]:
            self.stdout.write(str(write_hub_config()))
            return
        hub_dir = HubDir(Path(settings.BINDERY_HUB_DIR).resolve())
        backend = get_session_backend()
        local = backend.name == "local"  # servers are this machine's processes

        def say(message: str) -> None:
            self.stdout.write(f"hub: {message}")
            self.stdout.flush()

        running = _stop_previous_hub(hub_dir, say) if local and hub_dir.path.is_dir() else None
        binds = {
            "BINDERY_HUB_API_BIND": settings.BINDERY_HUB_API_BIND,
            "BINDERY_HUB_BIND": settings.BINDERY_HUB_BIND,
            "BINDERY_HUB_PROXY_API_BIND": proxy_api_bind(),
        }
        for name, bind in binds.items():
            if _port_taken(bind):
                raise CommandError(
                    f"{bind} ({name}) is already in use: is another hub running? "
                    f"Stop it or set {name} to a free address."
                )
        if running is not None:
            raise CommandError(
                f"another hub (pid {running.pid}) runs with BINDERY_HUB_DIR={hub_dir.path}:"
                " stop it first."
            )
        path = write_hub_config()
        say(f"{settings.BINDERY_HUB_URL} (API {settings.BINDERY_HUB_API_URL}), config {path}")
        if proxy_command() == [str(python_proxy())]:
            self.stderr.write(
                "hub: WARNING: the npm configurable-http-proxy is not installed (run bin/setup;"
                " it needs node and npm): using the Python one, which drops the kernel"
                " websocket's subprotocol (notebooks reconnect) and holds back streams."
            )
        self.stderr.flush()
        os.chdir(path.parent)
        if local:
            _start_watchdog(hub_dir, settings.BINDERY_HUB_ORPHAN_GRACE)
        elif backend.name == "kubernetes" and settings.BINDERY_K8S_KUBECONFIG:
            # KubeSpawner reads KUBECONFIG (else the pod's service account)
            os.environ["KUBECONFIG"] = str(Path(settings.BINDERY_K8S_KUBECONFIG).resolve())
        # exec, so the process manager's signals reach the hub (SIGTERM: it stops, and
        # locally its servers with it)
        argv = [sys.executable, "-m", "jupyterhub", "--config", str(path)]
        os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no user input
