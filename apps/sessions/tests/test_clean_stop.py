"""Stopping ``make run``: TERM to its process group stops the hub, its proxy and every user
server; after a hard kill the next ``runhub`` removes what the dead hub left and starts.

The hub runs as ``bin/run`` runs it (honcho with the Procfile, in a process group of its
own, like ``make run`` in a terminal), on free ports with its own state directory; the
user server is a real one started through the hub's API.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings

from apps.sessions.contract import signing_key
from apps.sessions.hub import HubClient
from apps.sessions.hubprocs import HubDir
from apps.sessions.tests.conftest import (
    Hub,
    _free_port,
    _free_port_pair,
    launch_maker,
    server_processes,
    wait_for,
)

BASE_DIR = Path(django_settings.BASE_DIR)
START_TIMEOUT = 60
STOP_TIMEOUT = 60  # the hub gives a server 10 s for SIGINT and 5 s for SIGTERM


@dataclass(frozen=True)
class Proc:
    """A process by pid and start time, so that a reused pid is not mistaken for it."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return cls(pid, int(stat[19])) if stat else None

    def alive(self) -> bool:
        stat = _stat(self.pid)
        # a zombie has exited: only its parent has not collected it yet
        return stat is not None and int(stat[19]) == self.started and stat[0] != "Z"

    def ppid(self) -> int:
        stat = _stat(self.pid)
        return int(stat[1]) if stat else 0

    def cmdline(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return "?"


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> set[Proc]:
    """``root`` and every process below it (by parent pid), as they are now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if proc := Proc.of(pid):
            found.add(proc)
        todo += children.get(pid, [])
    return found


def group_members(pgid: int) -> set[Proc]:
    members = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and int(stat[2]) == pgid:
            members.add(Proc(int(entry.name), int(stat[19])))
    return members


def _pid_file(path: Path) -> Proc | None:
    try:
        return Proc.of(int(path.read_text().strip()))
    except (OSError, ValueError):
        return None


@dataclass
class Supervised:
    hub: Hub
    process: subprocess.Popen[bytes]  # honcho, or runhub itself

    def proxy(self) -> Proc | None:
        return _pid_file(self.hub.dirs["hub"] / "proxy.pid")

    def hub_process(self) -> Proc | None:
        return _pid_file(self.hub.dirs["hub"] / "jupyterhub.pid")

    def watchdog(self) -> Proc | None:
        return _pid_file(self.hub.dirs["hub"] / "runhub-watchdog.pid")

    def everything(self, servers: list[Proc]) -> set[Proc]:
        """The supervisor and all below it, the hub, its proxy, its watchdog, the servers."""
        proxy, hub, watchdog = self.proxy(), self.hub_process(), self.watchdog()
        assert proxy and proxy.alive() and "configurable-http-proxy" in proxy.cmdline()
        assert hub and hub.alive() and "jupyterhub" in hub.cmdline()
        assert watchdog and watchdog.alive()
        # the small script, not a fork of runhub's Django process (apps/sessions/hubprocs.py)
        script = str(BASE_DIR / "apps/sessions/hubprocs.py")
        assert watchdog.cmdline().split()[1:4] == ["-I", "-S", script]
        return descendants(self.process.pid) | {proxy, hub, watchdog, *servers}


def _environ(root: Path, name: str) -> tuple[dict[str, str], dict[str, Path], int, int, str]:
    dirs = {
        "var": root / name / "var",
        "hub": root / name / "hub",
        **{d: root / d for d in ("envs", "checkouts", "sessions", "volumes")},
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    public_port, api_port = _free_port_pair(), _free_port()
    token = secrets.token_hex(32)
    environ = {
        "BINDERY_VAR_DIR": str(dirs["var"]),
        "BINDERY_HUB_DIR": str(dirs["hub"]),
        "BINDERY_ENVS_DIR": str(dirs["envs"]),
        "BINDERY_CHECKOUTS_DIR": str(dirs["checkouts"]),
        "BINDERY_SESSIONS_DIR": str(dirs["sessions"]),
        "BINDERY_VOLUMES_DIR": str(dirs["volumes"]),
        "BINDERY_HUB_BIND": f"127.0.0.1:{public_port}",
        "BINDERY_HUB_API_BIND": f"127.0.0.1:{api_port}",
        "BINDERY_HUB_TOKEN": token,
    }
    return environ, dirs, public_port, api_port, token


def _child_env(environ: dict[str, str]) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BINDERY_HUB", "BINDERY_SANDBOX", "BINDERY_SESSION_NETWORK"))
    }
    return {**inherited, **environ}


def _wait_for_api(hub: Hub, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the hub this ``process`` started answers (not a previous one on these ports)."""

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the hub's supervisor exited ({process.returncode}):\n{log.read_text()}")
        ours = _pid_file(hub.dirs["hub"] / "jupyterhub.pid")
        if ours is None or ours not in descendants(process.pid):
            return False
        try:
            return requests.get(f"{hub.api_url}/", timeout=1).ok
        except requests.RequestException:
            return False

    wait_for(answers, START_TIMEOUT, "the hub's API")


def _start(hub: Hub, argv: list[str], log_name: str) -> Supervised:
    log_path = hub.root / f"{log_name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=_child_env(hub.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as `make run` in a terminal
        )
    hub.process, hub.log_path = process, log_path
    _wait_for_api(hub, process, log_path)
    return Supervised(hub, process)


def _honcho(hub: Hub) -> Supervised:
    no_env_file = hub.root / "empty.env"  # not the checkout's .env, if it has one
    no_env_file.touch()
    argv = [str(BASE_DIR / ".venv" / "bin" / "honcho"), "-e", str(no_env_file)]
    return _start(hub, [*argv, "-f", str(BASE_DIR / "Procfile"), "start", "hub"], "honcho")


def _runhub(hub: Hub) -> Supervised:
    return _start(hub, [sys.executable, str(BASE_DIR / "manage.py"), "runhub"], "runhub")


@pytest.fixture
def stop_hub(single_user_env: Path, tmp_path: Path) -> Iterator[Hub]:
    """A hub's settings (not started) in a state directory of its own under the shared
    environments, checkouts and volumes; anything left running at the end is killed."""
    root = single_user_env.parent.parent
    name = f"stop-{secrets.token_hex(3)}"
    environ, dirs, public_port, api_port, token = _environ(root, name)
    tmp_marker = Path("/tmp", f"bindery-probe-{secrets.token_hex(4)}")
    tmp_marker.touch()
    hub = Hub(
        root=root / name,
        env_path=single_user_env,
        api_url=f"http://127.0.0.1:{api_port}/hub/api",
        public_url=f"http://127.0.0.1:{public_port}",
        token=token,
        key=signing_key(token),
        process=None,  # type: ignore[arg-type]  # set when started
        log_path=root / name / "none.log",
        dirs=dirs,
        environ=environ,
        tmp_marker=tmp_marker,
    )
    yield hub
    tmp_marker.unlink()
    for pid_file in ("runhub-watchdog.pid", "jupyterhub.pid"):
        if (left := _pid_file(dirs["hub"] / pid_file)) and left.alive():
            os.kill(left.pid, signal.SIGKILL)
    HubDir(dirs["hub"]).stop_leftovers(print)
    # a hub killed hard never released its servers' cgroups: the test removes them
    import hashlib

    installation = hashlib.sha256(str(dirs["hub"].resolve()).encode()).hexdigest()[:8]
    left_cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/bindery-{installation}/*")]
    if left_cgroups:
        from apps.cgroups import CgroupSet

        CgroupSet.from_dirs(p for p in left_cgroups if Path(p).is_dir()).release()


def _start_server(hub: Hub, user: str, server: str) -> list[Proc]:
    launch: Any = launch_maker(hub)(user, server)
    client = HubClient(hub.api_url, hub.token)
    client.ensure_user(user)
    client.start_server(user, server, launch.user_options)
    events = list(client.iter_progress(user, server))
    if not events or not events[-1].get("ready"):
        pytest.fail(f"the server did not start: {events}\n{hub.log()[-3000:]}")
    procs = [p for pid in server_processes(user, server) if (p := Proc.of(pid))]
    assert procs, "the server's processes are not visible in /proc"
    return procs


def _gone(procs: set[Proc]) -> bool:
    return not any(p.alive() for p in procs)


def _describe(procs: set[Proc]) -> str:
    return "; ".join(f"{p.pid}: {p.cmdline()[:160]}" for p in procs if p.alive())


def test_term_to_the_process_group_stops_hub_proxy_and_servers(stop_hub: Hub) -> None:
    supervised = _honcho(stop_hub)
    servers = _start_server(stop_hub, "carol", "stop-1")
    everything = supervised.everything(servers)

    os.killpg(supervised.process.pid, signal.SIGTERM)  # what Ctrl-C or `kill -TERM -PGID` does

    def all_gone() -> bool:
        return _gone(everything | group_members(supervised.process.pid))

    if not _wait(all_gone, STOP_TIMEOUT):
        pytest.fail(f"still running: {_describe(everything)}\n{stop_hub.log()[-4000:]}")
    assert supervised.process.wait(timeout=5) is not None
    assert "...done" in stop_hub.log()  # the hub's own cleanup ran to its end


def test_term_then_kill_of_the_group_still_stops_hub_proxy_and_servers(stop_hub: Hub) -> None:
    """As the report: TERM to the group, and KILL to it soon after (the supervisor of the
    supervisor giving up). The hub, out of the group's reach, finishes its cleanup."""
    supervised = _honcho(stop_hub)
    servers = _start_server(stop_hub, "dave", "stop-2")
    everything = supervised.everything(servers)

    os.killpg(supervised.process.pid, signal.SIGTERM)
    # KILL once honcho has passed TERM on (its log says so), long before the hub is done
    wait_for(lambda: "sending SIGTERM to hub" in stop_hub.log(), 10, "honcho to pass TERM on")
    os.killpg(supervised.process.pid, signal.SIGKILL)
    supervised.process.wait(timeout=10)

    if not _wait(lambda: _gone(everything), STOP_TIMEOUT):
        pytest.fail(f"still running: {_describe(everything)}\n{stop_hub.log()[-4000:]}")


def test_kill_of_the_group_alone_gets_the_orphaned_hub_stopped(stop_hub: Hub) -> None:
    """KILL without TERM: the hub (a session of its own) survives its supervisor; its
    watchdog notices, gives it time, then stops it, and the hub stops the rest."""
    stop_hub.environ["BINDERY_HUB_ORPHAN_GRACE"] = "3"  # the default 20 s, shortened
    supervised = _honcho(stop_hub)
    servers = _start_server(stop_hub, "frank", "stop-4")
    everything = supervised.everything(servers)

    os.killpg(supervised.process.pid, signal.SIGKILL)
    supervised.process.wait(timeout=10)

    if not _wait(lambda: _gone(everything), STOP_TIMEOUT):
        pytest.fail(f"still running: {_describe(everything)}\n{stop_hub.log()[-4000:]}")
    watchdog_log = (stop_hub.dirs["hub"] / "runhub-watchdog.log").read_text()
    assert "lost its supervisor" in watchdog_log and "SIGTERM" in watchdog_log
    assert "stopping it in 3s" in watchdog_log  # the setting reached the watchdog


def test_the_next_runhub_stops_a_hub_left_running_without_its_supervisor(stop_hub: Hub) -> None:
    """The report's state: a hub still running, reparented to init, its watchdog gone too.
    The next start stops it (it stops its proxy and servers) and starts its own."""
    first = _honcho(stop_hub)
    servers = _start_server(stop_hub, "ivan", "stop-6")
    everything = first.everything(servers)
    old_hub, watchdog = first.hub_process(), first.watchdog()
    assert old_hub and watchdog
    os.kill(watchdog.pid, signal.SIGKILL)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    wait_for(lambda: old_hub.ppid() == 1, 10, "the hub to be reparented to init")

    second = _runhub(stop_hub)
    try:
        assert _gone(everything), _describe(everything)
        assert f"stopping a previous hub that lost its supervisor (pid {old_hub.pid})" in (
            stop_hub.log()
        )
        assert HubClient(stop_hub.api_url, stop_hub.token).health().startswith("jupyterhub ")
    finally:
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=STOP_TIMEOUT)


def test_runhub_leaves_a_supervised_hub_of_the_same_directory_alone(stop_hub: Hub) -> None:
    first = _runhub(stop_hub)
    servers = _start_server(stop_hub, "judy", "stop-7")
    first.everything(servers)  # all there
    ours = {first.hub_process(), first.proxy(), first.watchdog(), *servers}
    try:
        stop_hub.environ["BINDERY_HUB_BIND"] = f"127.0.0.1:{_free_port_pair()}"
        stop_hub.environ["BINDERY_HUB_API_BIND"] = f"127.0.0.1:{_free_port()}"
        result = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "runhub"],
            cwd=BASE_DIR,
            env=_child_env(stop_hub.environ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "another hub (pid" in result.stderr and "stop it first" in result.stderr
        assert all(proc and proc.alive() for proc in ours)  # not one of them signalled
    finally:
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=STOP_TIMEOUT)


def _unsandboxed(hub: Hub) -> Hub:
    # without bubblewrap a server does not die with the hub (no --die-with-parent): a real
    # leftover when the hub is killed
    hub.environ["BINDERY_SANDBOX"] = "none"
    return hub


def test_the_watchdog_of_a_killed_hub_stops_its_proxy_and_servers(stop_hub: Hub) -> None:
    supervised = _runhub(_unsandboxed(stop_hub))
    servers = _start_server(stop_hub, "stopper", "stop-5")
    everything = supervised.everything(servers)
    hub_process = supervised.hub_process()
    assert hub_process

    os.kill(hub_process.pid, signal.SIGKILL)  # the hub cleans up nothing
    supervised.process.wait(timeout=10)

    if not _wait(lambda: _gone(everything), STOP_TIMEOUT):
        pytest.fail(f"left over: {_describe(everything)}\n{stop_hub.log()[-4000:]}")


def test_after_a_hard_kill_the_next_runhub_removes_leftovers_and_starts(stop_hub: Hub) -> None:
    first = _runhub(_unsandboxed(stop_hub))
    servers = _start_server(stop_hub, "erin", "stop-3")
    proxy, hub_process, watchdog = first.proxy(), first.hub_process(), first.watchdog()
    assert proxy and hub_process and watchdog
    os.kill(watchdog.pid, signal.SIGKILL)  # everything of ours killed outright: a hard kill
    os.kill(hub_process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    # the proxy and the server run in sessions of their own: they outlive the hub
    assert proxy.alive() and all(server.alive() for server in servers)

    second = _runhub(stop_hub)
    try:
        # runhub stopped them before the new hub started
        assert _gone({proxy, *servers}), _describe({proxy, *servers})
        assert "stopping servers a previous hub left: erin:stop-3" in stop_hub.log()
        new_proxy = second.proxy()
        assert new_proxy and new_proxy.alive() and new_proxy != proxy
        client = HubClient(stop_hub.api_url, stop_hub.token)
        assert client.health().startswith("jupyterhub ")
        wait_for(lambda: client.server_status("erin", "stop-3") == "stopped", 30, "reconcile")
        assert requests.get(f"{stop_hub.public_url}/hub/api/", timeout=5).ok  # proxy routes
        _start_server(stop_hub, "erin", "stop-3")  # the same server starts again
    finally:
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=STOP_TIMEOUT)


def _wait(condition: Any, timeout: float) -> bool:
    """Poll ``condition()`` every 0.1 s until it holds (True) or ``timeout`` passes (False)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
