"""BinderySpawner through a real JupyterHub: signed options, working copy, volumes, sandbox,
limits, start script, BINDER_* environment, stop and crash clean-up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from apps.sessions.backends.local.options import LaunchOptions
from apps.sessions.backends.local.spawner import LEAN_HOST
from apps.sessions.contract import (
    InvalidLaunchOptions,
    sign_user_options,
    signing_key,
    verify_user_options,
)
from apps.sessions.hub import HubClient, HubError
from apps.sessions.tests.conftest import (
    Hub,
    Running,
    bwrap_installed,
    cgroups_writable,
    launch_maker,
    server_processes,
    wait_for,
)
from apps.sessions.tests.jupyter import run_code
from apps.testing import available, requires

KEY = signing_key("a-portal-hub-token")
PAYLOAD = LaunchOptions(
    hub_user="u1",
    server_name="session-1",
    env_path="/e",
    checkout_path="/c",
    workdir="/w",
    volumes=(("/v", "persistent"),),
).to_dict()


# --- the signed contract (no hub needed) ------------------------------------------------------


def test_signed_options_round_trip() -> None:
    signed = sign_user_options(PAYLOAD, KEY)
    assert verify_user_options(signed, KEY) == PAYLOAD
    assert LaunchOptions.from_dict(verify_user_options(signed, KEY)).volumes == (
        ("/v", "persistent"),
    )


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: {**s, "payload": s["payload"].replace("/e", "/usr")},
        lambda s: {**s, "signature": "0" * 64},
        lambda s: {"payload": s["payload"]},
        lambda s: {**s, "extra": "x"},
        lambda s: json.loads(s["payload"]),
    ],
    ids=["payload-edited", "signature-replaced", "unsigned", "extra-key", "bare-payload"],
)
def test_tampered_options_are_refused(tamper: Any) -> None:
    with pytest.raises(InvalidLaunchOptions):
        verify_user_options(tamper(sign_user_options(PAYLOAD, KEY)), KEY)


def test_options_signed_with_another_key_are_refused() -> None:
    signed = sign_user_options(PAYLOAD, signing_key("another-token"))
    with pytest.raises(InvalidLaunchOptions, match="signature"):
        verify_user_options(signed, KEY)


def test_expired_options_are_refused() -> None:
    signed = sign_user_options(PAYLOAD, KEY, ttl=60, now=time.time() - 61)
    with pytest.raises(InvalidLaunchOptions, match="expired"):
        verify_user_options(signed, KEY)


@pytest.mark.parametrize(
    "change",
    [{"memory_bytes": 1}, {"max_processes": "9"}, {"volumes": [["/v"]]}, {"shell": "rm -rf /"}],
)
def test_malformed_payload_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidLaunchOptions):
        LaunchOptions.from_dict({**PAYLOAD, **change})


# --- a running server -----------------------------------------------------------------------


def _main_pid(running: Running) -> int:
    pids = server_processes(running.launch.user, running.launch.server)
    assert len(pids) == 1, pids
    return pids[0]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_progress_reports_the_spawner_steps_as_they_happen(running_server: Running) -> None:
    messages = [e.get("message", "") for e in running_server.events]
    starting = next(i for i, m in enumerate(messages) if m.startswith("Starting the server ("))
    assert running_server.events[-1]["ready"] is True
    # streamed while the server starts (not held back until the end, as a proxy could)
    assert running_server.arrivals[-1] - running_server.arrivals[starting] > 0.3


def test_server_runs_in_a_working_copy_of_the_checkout(running_server: Running) -> None:
    options = running_server.launch.options
    workdir = Path(options.workdir)
    assert (workdir / "README.md").read_text() == "# a repository\n"
    assert Path(os.readlink(f"/proc/{_main_pid(running_server)}/cwd")) == workdir
    # the checkout itself is untouched: the script was made executable in the copy only
    assert not os.stat(Path(options.checkout_path, "binder/start")).st_mode & 0o100
    assert os.stat(workdir / "binder/start").st_mode & 0o100


def test_binder_environment_is_set_as_on_mybinder(running_server: Running) -> None:
    env = _environ(_main_pid(running_server))
    assert env["BINDER_REPO_URL"] == "https://github.com/org/repo"
    assert env["BINDER_REF_URL"] == "https://github.com/org/repo/tree/0123abc"
    assert env["BINDER_LAUNCH_HOST"] == "http://127.0.0.1:8000/"
    assert env["BINDER_REQUEST"] == "v2/gh/org/repo/main"
    assert env["BINDER_PERSISTENT_REQUEST"] == "v2/gh/org/repo/0123abc"
    assert env["VIRTUAL_ENV"] == running_server.launch.options.env_path
    assert env["HOME"] == running_server.launch.options.workdir
    assert env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "1"
    assert "BINDERY_HUB_TOKEN" not in env


def test_start_script_is_honoured(running_server: Running) -> None:
    # the script exported a variable, then exec'd the server: the server process has it
    assert _environ(_main_pid(running_server))["BINDERY_TEST_START"] == "ran"


@requires(bwrap_installed(), reason="bubblewrap is not installed")
def test_server_runs_inside_bubblewrap(running_server: Running) -> None:
    pid = _main_pid(running_server)
    for namespace in ("mnt", "pid"):
        assert os.readlink(f"/proc/{pid}/ns/{namespace}") != os.readlink(
            f"/proc/self/ns/{namespace}"
        )
    probe = Path(running_server.launch.options.workdir, "sandbox-probe.txt").read_text().split()
    # the env is read-only, the hub's state hidden, /tmp private
    assert probe == ["env:read-only", "hub:hidden", "tmp:private"]
    # (the probe's touch failing inside is the check: unsandboxed tests share this env)


@requires(cgroups_writable(), reason="cgroup v1 memory/pids not writable")
def test_server_has_its_memory_and_process_limits(running_server: Running) -> None:
    lines = Path(f"/proc/{_main_pid(running_server)}/cgroup").read_text().splitlines()
    cgroups = dict(line.split(":", 2)[1:] for line in lines)
    memory = Path("/sys/fs/cgroup/memory" + cgroups["memory"])
    pids = Path("/sys/fs/cgroup/pids" + cgroups["pids"])
    assert cgroups["memory"].startswith("/bindery-")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 1024**3
    assert int((pids / "pids.max").read_text()) == 512


def test_files_written_under_persistent_land_in_the_volumes(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    launch = running_server.launch
    token, _ = hub_client.create_server_token(launch.user, launch.server, expires_in=600)
    base = f"{hub.public_url}/user/{launch.user}/{launch.server}"
    auth = {"Authorization": f"token {token}"}
    note = {"type": "file", "format": "text", "content": "kept"}
    response = requests.put(f"{base}/api/contents/persistent/notes.txt", headers=auth, json=note)
    assert response.status_code == 201, response.text
    response = requests.put(
        f"{base}/api/contents/persistent/teams/lab/shared.txt", headers=auth, json=note
    )
    assert response.status_code == 201, response.text
    assert (launch.volume / "notes.txt").read_text() == "kept"
    assert (launch.team_volume / "shared.txt").read_text() == "kept"
    # through the contents API, the working copy is the server's root
    listing = requests.get(f"{base}/api/contents/", headers=auth).json()
    assert {"README.md", "binder", "persistent"} <= {item["name"] for item in listing["content"]}


def test_a_kernel_runs_code_in_the_session(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    launch = running_server.launch
    token, _ = hub_client.create_server_token(launch.user, launch.server, expires_in=600)
    base = f"{hub.public_url}/user/{launch.user}/{launch.server}"
    code = (
        "import os\n"
        "with open('persistent/from-kernel.txt', 'w') as f: f.write(os.environ['BINDER_REQUEST'])\n"
        "print(os.getcwd())"
    )
    status, output = run_code(base, token, code)
    assert status == "ok"
    assert output.strip() == launch.options.workdir
    assert (launch.volume / "from-kernel.txt").read_text() == "v2/gh/org/repo/main"


# --- refused launches -------------------------------------------------------------------------


def _assert_nothing_started(hub: Hub, hub_client: HubClient, user: str, server: str) -> None:
    assert hub_client.server_status(user, server) == "stopped"
    assert server_processes(user, server) == []
    assert not (hub.dirs["sessions"] / f"{user}-{server}").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unsigned", "must be signed"),
        ("tampered", "signature is not valid"),
        ("expired", "expired"),
        ("env-outside", "environment is outside"),
        ("symlink-escape", "volume is outside"),
        ("other-server", "signed for another server"),
    ],
)
def test_invalid_options_are_refused_with_400_and_nothing_starts(
    hub: Hub, hub_client: HubClient, make_launch: Any, case: str, message: str
) -> None:
    user, server = "mallory", f"refused-{case}"
    hub_client.ensure_user(user)
    overrides: dict[str, Any] = {}
    if case == "env-outside":
        overrides["env_path"] = str(Path(os.__file__).parent.parent)  # a real env, wrong place
    if case == "symlink-escape":
        link = hub.dirs["volumes"] / "escape-link"
        if not link.is_symlink():
            link.symlink_to("/etc", target_is_directory=True)
        overrides["volumes"] = ((str(link), "persistent"),)
    if case == "other-server":
        overrides["server_name"] = "someone-elses"
    launch = make_launch(user, server, ttl=-1 if case == "expired" else 300, **overrides)
    user_options: Any = launch.user_options
    if case == "unsigned":
        user_options = launch.options.to_dict()
    if case == "tampered":
        user_options = {
            **user_options,
            "payload": user_options["payload"].replace("/lab", "/tree"),
        }
    with pytest.raises(HubError) as raised:
        hub_client.start_server(user, server, user_options)
    assert raised.value.data["hub_status"] == 400
    assert message in raised.value.message
    _assert_nothing_started(hub, hub_client, user, server)


def test_symlinks_in_the_repo_or_a_volume_do_not_redirect_mounts_on_the_host(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    outside = hub.root / "outside"
    outside.mkdir(exist_ok=True)
    launch = make_launch("ivan", "session-6")
    # the repository ships `persistent` as a symlink; the user's volume has `teams` as one
    Path(launch.options.checkout_path, "persistent").symlink_to(outside)
    teams = launch.volume / "teams"
    if teams.is_dir() and not teams.is_symlink():
        shutil.rmtree(teams)
    teams.symlink_to(outside)
    try:
        hub_client.ensure_user("ivan")
        hub_client.start_server("ivan", "session-6", launch.user_options)
        events = list(hub_client.iter_progress("ivan", "session-6"))
        assert events[-1].get("ready"), events
        assert list(outside.iterdir()) == []  # nothing was created through the symlinks
        persistent = Path(launch.options.workdir, "persistent")
        assert persistent.is_dir() and not persistent.is_symlink()
        token, _ = hub_client.create_server_token("ivan", "session-6", expires_in=600)
        response = requests.put(
            f"{hub.public_url}/user/ivan/session-6/api/contents/persistent/mine.txt",
            headers={"Authorization": f"token {token}"},
            json={"type": "file", "format": "text", "content": "x"},
        )
        assert response.status_code == 201
        assert (launch.volume / "mine.txt").exists()
        assert list(outside.iterdir()) == []
        # the user's symlink was replaced by the mount point (a symlink holds no data)
        assert (teams / "lab").is_dir() and not teams.is_symlink()
    finally:
        hub_client.stop_server("ivan", "session-6")


# --- stop and crash -------------------------------------------------------------------------


def _start(hub_client: HubClient, make_launch: Any, user: str, server: str, **kw: Any) -> Any:
    launch = make_launch(user, server, **kw)
    hub_client.ensure_user(user)
    hub_client.start_server(user, server, launch.user_options)
    events = list(hub_client.iter_progress(user, server))
    assert events[-1].get("ready"), events
    pids = server_processes(user, server)
    assert len(pids) == 1
    cgroup = Path(f"/proc/{pids[0]}/cgroup").read_text()
    return launch, pids[0], cgroup


def _cgroup_dirs(cgroup_file: str) -> list[Path]:
    dirs = []
    for line in cgroup_file.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("memory", "pids", "cpu") and path.startswith("/bindery-"):
            dirs.append(Path("/sys/fs/cgroup", controllers, path.lstrip("/")))
    return dirs


def test_stop_ends_the_process_and_removes_its_cgroups(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    launch, pid, cgroup = _start(hub_client, make_launch, "bob", "session-2", cpu=1.5)
    dirs = _cgroup_dirs(cgroup)
    assert all(d.is_dir() for d in dirs)
    if available(cgroups_writable(), "cgroup v1 memory/pids not writable"):
        cpu = next(d for d in dirs if d.parts[4] == "cpu")
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 150_000
    (launch.volume / "before-stop.txt").write_text("mine")
    stopped = hub_client.stop_server("bob", "session-2")
    if not stopped:
        wait_for(lambda: hub_client.server_status("bob", "session-2") == "stopped", 30, "stop")
    assert not Path(f"/proc/{pid}").exists()
    assert server_processes("bob", "session-2") == []
    assert not any(d.exists() for d in dirs)
    # the portal owns the working copy and the volume: both are still there
    assert Path(launch.options.workdir, "README.md").exists()
    assert (launch.volume / "before-stop.txt").read_text() == "mine"
    # removed from the hub: a second stop is a no-op success
    assert hub_client.stop_server("bob", "session-2") is True


def test_a_server_that_fails_to_start_reports_why_and_leaves_nothing(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    launch = make_launch("heidi", "session-5")
    script = Path(launch.options.checkout_path, "binder", "start")
    script.write_text("#!/bin/bash\necho 'cannot find the data set' >&2\nexit 3\n")
    hub_client.ensure_user("heidi")
    hub_client.start_server("heidi", "session-5", launch.user_options)
    events = list(hub_client.iter_progress("heidi", "session-5"))
    assert events[-1].get("failed") is True
    assert "cannot find the data set" in events[-1]["message"]
    assert hub_client.server_status("heidi", "session-5") == "stopped"
    assert server_processes("heidi", "session-5") == []
    leftovers = [
        p for c in ("memory", "pids") for p in Path("/sys/fs/cgroup", c).glob("bindery-*/heidi*")
    ]
    assert leftovers == []


def test_a_killed_server_is_reported_stopped_and_cleaned_up(
    hub: Hub, hub_client: HubClient, make_launch: Any
) -> None:
    _, pid, cgroup = _start(hub_client, make_launch, "carol", "session-3")
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: hub_client.server_status("carol", "session-3") == "stopped",
        30,
        "the hub to notice the dead server",
    )
    names = {(s["user"], s["name"]) for s in hub_client.list_servers()}
    assert ("carol", "session-3") not in names
    wait_for(lambda: not any(d.exists() for d in _cgroup_dirs(cgroup)), 10, "the cgroups to go")
    hub_client.stop_server("carol", "session-3")


# --- without a sandbox ------------------------------------------------------------------------


def test_without_a_sandbox_volumes_are_linked_in_and_unlinked_at_stop(
    unsandboxed_hub: Hub,
) -> None:
    hub, client = unsandboxed_hub, unsandboxed_hub.client()
    launch = launch_maker(hub)("grace", "session-4")
    client.ensure_user("grace")
    client.start_server("grace", "session-4", launch.user_options)
    events = list(client.iter_progress("grace", "session-4"))
    assert events[-1].get("ready"), events
    assert any("no sandbox, shared network" in e.get("message", "") for e in events)
    (pid,) = server_processes("grace", "session-4")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # a start script gets repo2docker's command (a lean start without one: test_lean_start)
    assert LEAN_HOST.encode() not in cmdline
    assert any(arg.endswith(b"/bin/jupyterhub-singleuser") for arg in cmdline)
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    # without a sandbox the server shares the host's network, and both logs say so loudly
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    warning = "Warning: this session uses the host's network (there is no bubblewrap sandbox)"
    assert any(e.get("message", "").startswith(warning) for e in events)
    assert f"grace:session-4: {warning}" in hub.log()
    workdir = Path(launch.options.workdir)
    assert Path(os.readlink(workdir / "persistent")) == launch.volume
    token, _ = client.create_server_token("grace", "session-4", expires_in=600)
    base = f"{hub.public_url}/user/grace/session-4/api/contents/persistent"
    note = {"type": "file", "format": "text", "content": "linked"}
    auth = {"Authorization": f"token {token}"}
    assert requests.put(f"{base}/teams/lab/t.txt", headers=auth, json=note).status_code == 201
    assert (launch.team_volume / "t.txt").read_text() == "linked"
    assert client.stop_server("grace", "session-4") or wait_for(
        lambda: client.server_status("grace", "session-4") == "stopped", 30, "stop"
    )
    # the links are gone; the volumes keep their files
    assert not (workdir / "persistent").is_symlink()
    assert not (launch.volume / "teams" / "lab").is_symlink()
    assert (launch.team_volume / "t.txt").exists()
