"""A real JupyterHub for the session tests, started once per test session.

``hub`` runs ``manage.py runhub`` (the generated config, BinderySpawner, the Python proxy)
on free loopback ports with every directory in a temporary tree, and a single-user
environment built with uv, offline, from the shared cache (bin/warm-test-cache fills it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings

from apps.sandbox import Ids
from apps.sessions.backends.local.options import LaunchOptions
from apps.sessions.contract import sign_user_options, signing_key
from apps.sessions.hub import HubClient

BASE_DIR = Path(django_settings.BASE_DIR)
HUB_START_TIMEOUT = 60


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _free_port_pair() -> int:
    """A port whose successor is free too (the proxy's API listens on public port + 1)."""
    for _ in range(50):
        port = _free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no pair of free ports")


@dataclass
class Hub:
    root: Path
    env_path: Path
    api_url: str
    public_url: str
    token: str
    key: bytes
    process: subprocess.Popen[bytes]
    log_path: Path
    dirs: dict[str, Path]
    environ: dict[str, str]
    tmp_marker: Path  # a file in the host's /tmp, which sandboxed servers must not see

    def client(self) -> HubClient:
        return HubClient(self.api_url, self.token)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def single_user_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the base Jupyter packages, built offline from the shared uv cache."""
    root = tmp_path_factory.getbasetemp() / "bindery-hub"
    env_path = root / "envs" / "base"
    env_path.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(
        os.environ.get("BINDERY_UV_CACHE_DIR", django_settings.BINDERY_UV_CACHE_DIR)
    ).resolve()
    uv_env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never"}
    uv = str(BASE_DIR / ".venv" / "bin" / "uv")
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(env_path)], check=True, env=uv_env
    )
    requirements = BASE_DIR / "apps" / "builds" / "backends" / "base-requirements.txt"
    python = str(env_path / "bin" / "python")
    result = subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--offline",
            "--compile-bytecode",
            "--python",
            python,
            "-r",
            str(requirements),
        ],
        env=uv_env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(
            f"uv could not build the test env offline (run bin/warm-test-cache):\n{result.stderr}"
        )
    return env_path


def _start_hub(root: Path, env_path: Path, name: str, extra: dict[str, str]) -> Hub:
    """``manage.py runhub`` on free ports; environments, checkouts, sessions and volumes are
    shared by every test hub under ``root``, the hub's own state is in ``root/<name>``."""
    dirs = {
        "var": root / "var",
        "hub": root / name,
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
        **extra,
    }
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BINDERY_HUB", "BINDERY_SANDBOX", "BINDERY_SESSION_NETWORK"))
    }
    log_path = root / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "runhub"],
            cwd=BASE_DIR,
            env={**child_env, **environ},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api_url = f"http://127.0.0.1:{api_port}/hub/api"
    deadline = time.monotonic() + HUB_START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"the hub exited ({process.returncode}):\n{log_path.read_text()}")
        try:
            if requests.get(f"{api_url}/", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the hub did not answer in {HUB_START_TIMEOUT}s:\n{log_path.read_text()}")
        time.sleep(0.1)
    tmp_marker = Path("/tmp", f"bindery-probe-{secrets.token_hex(4)}")
    tmp_marker.touch()
    return Hub(
        root=root,
        env_path=env_path,
        api_url=api_url,
        public_url=f"http://127.0.0.1:{public_port}",
        token=token,
        key=signing_key(token),
        process=process,
        log_path=log_path,
        dirs=dirs,
        environ=environ,
        tmp_marker=tmp_marker,
    )


def _stop_hub(hub: Hub) -> None:
    hub.tmp_marker.unlink()
    hub.process.send_signal(signal.SIGTERM)  # the hub stops its servers and the proxy
    try:
        hub.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()
    _remove_cgroup_parents(hub.dirs["hub"])


@pytest.fixture(scope="session")
def hub(single_user_env: Path) -> Iterator[Hub]:
    """The hub as configured by default (bubblewrap where installed)."""
    started = _start_hub(single_user_env.parent.parent, single_user_env, "hub", {})
    yield started
    _stop_hub(started)


@pytest.fixture(scope="session")
def unsandboxed_hub(single_user_env: Path) -> Iterator[Hub]:
    """A second hub with BINDERY_SANDBOX=none (machines without bubblewrap)."""
    root = single_user_env.parent.parent
    started = _start_hub(root, single_user_env, "hub-nosandbox", {"BINDERY_SANDBOX": "none"})
    yield started
    _stop_hub(started)


def _remove_cgroup_parents(hub_dir: Path) -> None:
    """The per-installation cgroup parents the spawner leaves in place (empty by now)."""
    import hashlib

    parent = "bindery-" + hashlib.sha256(str(hub_dir.resolve()).encode()).hexdigest()[:8]
    for controller in ("memory", "pids", "cpu"):
        path = Path("/sys/fs/cgroup", controller, parent)
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir():
                    child.rmdir()
            path.rmdir()


@pytest.fixture(scope="session")
def hub_client(hub: Hub) -> HubClient:
    return hub.client()


@pytest.fixture
def hub_settings(hub: Hub, settings: Any) -> Any:
    """Django settings pointing at the test hub (for code that reads settings)."""
    settings.BINDERY_HUB_API_URL = hub.api_url
    settings.BINDERY_HUB_URL = hub.public_url
    settings.BINDERY_HUB_TOKEN = hub.token
    settings.BINDERY_HUB_DIR = hub.dirs["hub"]
    settings.BINDERY_ENVS_DIR = hub.dirs["envs"]
    settings.BINDERY_CHECKOUTS_DIR = hub.dirs["checkouts"]
    settings.BINDERY_SESSIONS_DIR = hub.dirs["sessions"]
    settings.BINDERY_VOLUMES_DIR = hub.dirs["volumes"]
    return settings


START_SCRIPT = """#!/bin/bash
# repo2docker semantics: set things up, then run the server command given as arguments
export BINDERY_TEST_START=ran
{{
  if touch "$VIRTUAL_ENV/escape" 2>/dev/null; then echo env:writable; else echo env:read-only; fi
  if test -e {hub_config}; then echo hub:visible; else echo hub:hidden; fi
  if test -e {host_tmp}; then echo tmp:shared; else echo tmp:private; fi
}} > sandbox-probe.txt
exec "$@"
"""


@dataclass
class Launch:
    user: str
    server: str
    options: LaunchOptions
    user_options: dict[str, str]
    volume: Path
    team_volume: Path


@pytest.fixture(scope="session")
def make_launch(hub: Hub) -> Any:
    """``make_launch(user, server, **overrides)``: a checkout with a start script, a user
    volume and a team volume, and the options signed for ``hub``."""
    return launch_maker(hub)


def session_uid(user: str) -> int:
    """A stable session uid for a test's hub user name."""
    digest = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16)
    return Ids().user(digest % 800_000 + 1)


def launch_maker(hub: Hub) -> Any:
    def make(user: str, server: str, *, ttl: int = 300, **overrides: Any) -> Launch:
        checkout = hub.dirs["checkouts"] / f"{user}-{server}"
        (checkout / "binder").mkdir(parents=True, exist_ok=True)
        (checkout / "README.md").write_text("# a repository\n")
        script = checkout / "binder" / "start"
        script.write_text(
            START_SCRIPT.format(
                hub_config=hub.dirs["hub"] / "jupyterhub_config.py",
                host_tmp=hub.tmp_marker,
            )
        )
        script.chmod(0o644)  # the spawner makes it executable, as repo2docker does
        volume = hub.dirs["volumes"] / f"{user}-home"
        team_volume = hub.dirs["volumes"] / "team-lab"
        volume.mkdir(exist_ok=True)
        team_volume.mkdir(exist_ok=True)
        fields: dict[str, Any] = {
            "hub_user": user,
            "server_name": server,
            "env_path": str(hub.env_path),
            "checkout_path": str(checkout),
            "workdir": str(hub.dirs["sessions"] / f"{user}-{server}"),
            "volumes": ((str(volume), "persistent"), (str(team_volume), "persistent/teams/lab")),
            "memory_bytes": 1024**3,
            "max_processes": 512,
            "start_script": "binder/start",
            "binder_repo_url": "https://github.com/org/repo",
            "binder_ref_url": "https://github.com/org/repo/tree/0123abc",
            "binder_launch_host": "http://127.0.0.1:8000/",
            "binder_request": "v2/gh/org/repo/main",
            "binder_persistent_request": "v2/gh/org/repo/0123abc",
            "default_url": "/lab",
            # the session's host uid in the sandbox (apps.sandbox.Ids), one per test user
            "uid": session_uid(user),
            "gid": session_uid(user),
            "team_gid": Ids().team(7),
            **overrides,
        }
        options = LaunchOptions(**fields)
        return Launch(
            user=user,
            server=server,
            options=options,
            user_options=sign_user_options(options.to_dict(), hub.key, ttl=ttl),
            volume=volume,
            team_volume=team_volume,
        )

    return make


@dataclass
class Running:
    launch: Launch
    events: list[dict[str, Any]]
    arrivals: list[float]  # seconds from the start request to each event's arrival


@pytest.fixture(scope="session")
def running_server(hub: Hub, hub_client: HubClient, make_launch: Any) -> Iterator[Running]:
    """One server started through the hub with signed options, shared by read-only tests."""
    launch = make_launch("alice", "session-1")
    hub_client.ensure_user("alice")
    started = time.monotonic()
    hub_client.start_server("alice", "session-1", launch.user_options)
    events, arrivals = [], []
    for event in hub_client.iter_progress("alice", "session-1"):
        events.append(event)
        arrivals.append(time.monotonic() - started)
    if not events or not events[-1].get("ready"):
        pytest.fail(f"the server did not start: {events}\n{hub.log()[-3000:]}")
    yield Running(launch, events, arrivals)
    hub_client.stop_server("alice", "session-1")


def server_processes(user: str, server: str) -> list[int]:
    """Host pids of the single-user server processes for ``user``/``server`` (not bubblewrap,
    not the short-lived helpers a server starts)."""
    wanted = {f"JUPYTERHUB_USER={user}".encode(), f"JUPYTERHUB_SERVER_NAME={server}".encode()}
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = set(Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"))
            exe = os.readlink(f"/proc/{entry.name}/exe")
            ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if wanted <= environ and os.path.basename(exe) != "bwrap":
            found[int(entry.name)] = ppid
    return sorted(pid for pid, ppid in found.items() if ppid not in found)


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    """Poll ``condition()`` until truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def hub_user_status(hub: Hub, name: str) -> int:
    """The hub API's status for ``GET /users/<name>``: 200 while the user exists, 404 once
    it is gone."""
    response = requests.get(f"{hub.api_url.rstrip('/')}/users/{name}", timeout=10,
                            headers={"Authorization": f"token {hub.token}"})  # fmt: skip
    return response.status_code


def bwrap_installed() -> bool:
    return shutil.which("bwrap") is not None


def network_isolation_available() -> bool:
    """Whether the default hub gives sessions a network namespace of their own (bubblewrap
    and pasta installed, root, a default route): the spawner's own decision."""
    from apps.sessions.backends.local.spawner import BinderySpawner

    return bwrap_installed() and bool(BinderySpawner()._network_plan(sandboxed=True)[0])


def cgroups_writable() -> bool:
    return os.access("/sys/fs/cgroup/memory", os.W_OK) and os.access("/sys/fs/cgroup/pids", os.W_OK)
