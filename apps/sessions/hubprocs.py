"""The hub's processes as ``/proc`` shows them, what a hub leaves in its directory, and the
watchdog (``manage.py runhub``'s docstring says when each is used).

Standard library only, and run as a script: the watchdog is ``python -I -S`` on this file
(``start_watchdog``), not a fork of ``runhub``'s Django process, which would hold ~80 MB for
as long as the hub runs to look at ``/proc`` twice a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_NAME = "jupyterhub_config.py"  # the hub's configuration file in BINDERY_HUB_DIR
WATCHDOG_PID = "runhub-watchdog.pid"
WATCHDOG_LOG = "runhub-watchdog.log"
ORPHAN_GRACE = 20.0  # s an unsupervised hub has to finish its cleanup (a server: 10 + 5 s)
# (BINDERY_HUB_ORPHAN_GRACE overrides it: tests, and operators whose servers stop slower)
STOP_GRACE = 20.0  # s between TERM and KILL for a hub, the proxy or a server


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


def stop_all(procs: list[Proc], first: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
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
            stop_all([proc for _, proc in servers], first=signal.SIGINT)
        proxy = self.proxy()
        if proxy:
            say(f"stopping the proxy a previous hub left (pid {proxy.pid})")
            stop_all([proxy])
        (self.path / "proxy.pid").unlink(missing_ok=True)


# -- the watchdog --------------------------------------------------------------------------


def start_watchdog(hub_dir: HubDir, grace: float = ORPHAN_GRACE) -> None:
    """Start the watchdog for this process (about to become the hub) and return at once; it
    gives a hub that lost its supervisor ``grace`` seconds to end by itself. Double-forked
    into a session of its own (a process-group KILL misses it), then this file as a script."""
    hub = Proc.of(os.getpid())
    supervisor = Proc.of(os.getppid())
    if hub is None:
        return
    argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), str(hub_dir.path),
            str(grace), f"{hub.pid}:{hub.started}",
            f"{supervisor.pid}:{supervisor.started}" if supervisor else "-"]  # fmt: skip
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return
    try:  # the first child: a new session, then the watchdog in it, then exit
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)  # not the supervisor's pipe: it would wait for us to close it
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.execv(sys.executable, argv)  # noqa: S606 - this file, by absolute path
    except BaseException:
        with open(hub_dir.path / WATCHDOG_LOG, "a") as log:
            traceback.print_exc(file=log)
    finally:
        os._exit(0)


def watch(hub: Proc, supervisor: Proc | None, hub_dir: HubDir, grace: float) -> None:
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


def _proc(arg: str) -> Proc | None:
    if arg == "-":
        return None
    pid, _, started = arg.partition(":")
    return Proc(int(pid), int(started))


def main(argv: list[str]) -> None:
    """``hubprocs.py HUB_DIR GRACE HUB_PID:START SUPERVISOR_PID:START|-``: watch that hub."""
    hub_dir = HubDir(Path(argv[0]))
    try:
        hub = _proc(argv[2])
        if hub is not None:
            watch(hub, _proc(argv[3]), hub_dir, float(argv[1]))
    except BaseException:
        with open(hub_dir.path / WATCHDOG_LOG, "a") as log:
            traceback.print_exc(file=log)


if __name__ == "__main__":
    main(sys.argv[1:])
