"""Attacks on the session sandbox from a real kernel in a real session.

A real JupyterHub starts the session (``running_server``: BinderySpawner, bubblewrap, the
session's own uid, its network namespace where pasta is installed); a kernel in it runs
what a hostile notebook would: keep root's capabilities, leave its namespaces, change its
network's routes, read the portal's secrets, ``/etc/shadow``, another user's volume,
another environment and the uv cache, write into its own environment. Each target is first
shown to exist on the host (the control), so a "no" means "refused", not "not there".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings as django_settings

from apps.sandbox import Ids
from apps.sessions.hub import HubClient
from apps.sessions.tests.conftest import (
    Hub,
    Running,
    bwrap_installed,
    network_isolation_available,
)
from apps.sessions.tests.jupyter import run_code
from apps.testing import available, require

ATTACK = r"""
import ctypes, json, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split()[1]
def refused(call):
    return call() != 0
def run(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode
    except OSError:
        return None
report = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
          "capeff": status("CapEff"), "nonewprivs": status("NoNewPrivs"),
          "unshare_user": refused(lambda: libc.unshare(0x10000000)),
          "umount_proc": refused(lambda: libc.umount2(b"/proc", 2)),
          "remount_rw": refused(lambda: libc.mount(None, b"/", None, 32 | 4096, None)),
          "default_route": run("ip", "route", "show", "default"),
          "route_del": run("ip", "route", "del", "default"),
          "read": {}, "seen": {}, "wrote": {}}
for path in READ:
    try:
        open(path, "rb").read(1)
        report["read"][path] = True
    except OSError:
        report["read"][path] = False
    report["seen"][path] = os.path.lexists(path)
for path in WRITE:
    try:
        open(path, "a").write("tampered")
        report["wrote"][path] = True
    except OSError:
        report["wrote"][path] = False
print(json.dumps(report))
"""


def test_a_kernel_is_unprivileged_and_reaches_nothing_of_the_host(
    hub: Hub, hub_client: HubClient, running_server: Running, tmp_path_factory
) -> None:
    require(bwrap_installed(), "bubblewrap is not installed")
    launch = running_server.launch
    # targets on the host, each shown to be there (the controls)
    other_volume = hub.dirs["volumes"] / "someone-else-home"
    other_volume.mkdir(exist_ok=True)
    (other_volume / "notes.txt").write_text("another user's notes\n")
    other_env = hub.dirs["envs"] / "another-environment"
    other_env.mkdir(exist_ok=True)
    (other_env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    var = Path(django_settings.VAR_DIR)
    secrets = [p for p in (var / "secret_key", var / "bindery_hub_token") if p.is_file()]
    cache = Path(django_settings.BINDERY_UV_CACHE_DIR)
    cache_file = next(iter(sorted(cache.glob("archive-v0/*/toolz/__init__.py"))), None)
    hub_config = hub.dirs["hub"] / "jupyterhub_config.py"
    read = [*secrets, Path("/etc/shadow"), other_volume / "notes.txt", other_env / "pyvenv.cfg",
            hub_config, *([cache_file] if cache_file else [])]  # fmt: skip
    assert all(p.is_file() for p in read), [p for p in read if not p.is_file()]
    own_env_file = Path(launch.options.env_path) / "pyvenv.cfg"
    write = [own_env_file, Path(launch.options.env_path) / "bin" / "planted"]
    assert own_env_file.is_file()
    before = own_env_file.read_bytes()

    token, _ = hub_client.create_server_token(launch.user, launch.server, expires_in=600)
    base = f"{hub.public_url}/user/{launch.user}/{launch.server}"
    code = f"READ = {json.dumps([str(p) for p in read])}\n"
    code += f"WRITE = {json.dumps([str(p) for p in write])}\n" + ATTACK
    status, output = run_code(base, token, code)
    assert status == "ok", output
    got = json.loads(output.strip().splitlines()[-1])

    assert got["uid"] == launch.options.uid and got["gid"] == launch.options.gid
    assert got["uid"] in Ids().session_range
    assert set(got["groups"]) - {got["gid"]} == {launch.options.team_gid}  # its team only
    assert got["capeff"] == "0" * 16 and got["nonewprivs"] == "1"
    assert got["unshare_user"] and got["umount_proc"] and got["remount_rw"]
    if available(network_isolation_available(), "pasta is needed for a network of its own"):
        assert got["default_route"] == 0  # the control: its default route is there
        assert got["route_del"] not in (0, None)  # and cannot be deleted
    assert not any(got["read"].values()), got["read"]
    assert not any(got["seen"].values()), got["seen"]  # none of it is even in the sandbox
    assert not any(got["wrote"].values()), got["wrote"]
    assert own_env_file.read_bytes() == before
    assert not (Path(launch.options.env_path) / "bin" / "planted").exists()
    # the session's own files are its uid's, and nobody else's to read
    workdir = os.stat(launch.options.workdir)
    assert (workdir.st_uid, oct(workdir.st_mode & 0o777)) == (launch.options.uid, "0o700")
    home = os.stat(launch.volume)
    assert (home.st_uid, oct(home.st_mode & 0o777)) == (launch.options.uid, "0o700")
    team = os.stat(launch.team_volume)
    assert (team.st_uid, team.st_gid) == (0, launch.options.team_gid)
    assert oct(team.st_mode & 0o7777) == "0o2770"
