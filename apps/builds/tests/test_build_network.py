"""What a build's code can reach on the network: its sandboxed commands (uv running the
repository's build backend, postBuild) run in a network namespace of the build's own
(``apps.netns``): the internet through pasta, nothing on this machine.

Real builds of repositories on the loopback git server, offline from the shared uv cache.
The probe runs twice in each build: in ``setup.py`` (setuptools runs it while uv builds the
repository's package) and in ``postBuild``. It connects to listeners the test opens on this
machine (its loopback and its other addresses) and to PostgreSQL's and Redis's ports, reads
the namespace's default route, and puts what it found in the build log. The control, with
``BINDERY_BUILD_NETWORK=shared``, shows the same probe does connect.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.builds.backends import store
from apps.builds.backends.local.network import loopback_services, network_plan
from apps.builds.backends.local.steps import sandbox_mode
from apps.builds.tests.helpers import (
    Log,
    build,
    builds_isolated,
    envs_beside_the_cache,
    exits,
    pastas_of,
    resolved,
    tcp_listener,
    unique,
)
from apps.testing import require, requires
from portal.errors import BackendError

pytestmark = pytest.mark.build

requires_isolation = requires(
    builds_isolated(),
    reason="needs root, bubblewrap, pasta (passt), nsenter, ip and an IPv4 default route",
)
Target = tuple[str, int]
PROBE = """
import concurrent.futures, errno, json, socket

def probe(target):
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=1.5):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "unreachable"
        return f"error: {exc}"

def default_routes():
    with open("/proc/net/route") as fh:
        rows = [line.split() for line in fh.read().splitlines()[1:]]
    return [[row[0], row[2]] for row in rows if row[1] == "00000000"]

def network_report():
    with concurrent.futures.ThreadPoolExecutor(len(TARGETS)) as pool:
        probes = list(pool.map(probe, TARGETS))
    return {"probes": probes, "routes": default_routes()}
"""
SETUP_PY = """\
import json, os
from setuptools import setup
{probe}
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "setup-network.json"), "w") as handle:
    json.dump(network_report(), handle)
setup(name="netprobe", version="0.1", py_modules=["netprobe"])
"""
POST_BUILD = """\
#!/usr/bin/env python
import json
{probe}
with open("setup-network.json") as handle:
    print("setup.py network: " + handle.read().strip())
print("postBuild network: " + json.dumps(network_report()))
"""


@pytest.fixture(autouse=True)
def _sandboxed(settings: Any, tmp_path: Path, git_host: Any) -> Iterator[None]:
    """bubblewrap required, builds offline, environments beside the uv cache."""
    settings.BINDERY_SANDBOX = "auto"
    settings.BINDERY_BUILD_NETWORK = "auto"
    require(sandbox_mode() == "bwrap", "bubblewrap missing or cannot create namespaces here")
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        yield


def _probe_here(targets: list[Target]) -> list[str]:
    """The same probe, run on the host."""
    code = f"TARGETS = {targets!r}\n{PROBE}\nprint(json.dumps(network_report()['probes']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return list(json.loads(done.stdout))


def _host_addresses() -> list[str]:
    """Every address of this host but the loopback's and IPv6 link-local ones, as ``ip``
    reports them (independently of apps.netns's own reading of /proc)."""
    found = []
    for link in json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True,
                                          check=True, text=True).stdout):  # fmt: skip
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return found


def _host_gateways() -> set[str]:
    rows = [line.split() for line in Path("/proc/net/route").read_text().splitlines()[1:]]
    return {row[2] for row in rows if row[1] == "00000000"}


@contextlib.contextmanager
def _address_pasta_does_not_copy() -> Iterator[None]:
    """A documentation address (TEST-NET-3) on this host's loopback interface while the block
    runs (as root). pasta copies only the addresses of the interface with the default route
    into the namespace, so only the namespace's ``prohibit`` routes keep a build from
    reaching this one through pasta's NAT; without root nothing is added."""
    added = ""
    for last in random.sample(range(1, 255), 5):  # another test run may hold one
        address = f"203.0.113.{last}/32"
        done = subprocess.run(["ip", "addr", "add", address, "dev", "lo"], capture_output=True)
        if done.returncode == 0:
            added = address
            break
    try:
        yield
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", added, "dev", "lo"], capture_output=True)


@contextlib.contextmanager
def _targets_on_this_machine() -> Iterator[tuple[list[Target], list[Target]]]:
    """(listeners the test opened on this host's addresses, each shown to accept the test's
    own connection; the PostgreSQL and Redis ports)."""
    ipv6 = Path("/proc/net/if_inet6").exists()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_address_pasta_does_not_copy())
        anywhere = stack.enter_context(tcp_listener(socket.AF_INET, "0.0.0.0"))
        ours = [("127.0.0.1", stack.enter_context(tcp_listener(socket.AF_INET, "127.0.0.1")))]
        if ipv6:
            anywhere6 = stack.enter_context(tcp_listener(socket.AF_INET6, "::"))
            ours.append(("::1", stack.enter_context(tcp_listener(socket.AF_INET6, "::1"))))
        ours += [(a, anywhere6 if ":" in a else anywhere) for a in _host_addresses()]
        assert _probe_here(ours) == ["connected"] * len(ours), ours
        services = [("127.0.0.1", 5432), ("127.0.0.1", 6379), *([("::1", 6379)] if ipv6 else [])]
        yield ours, services


def _probe_repo(git_host: Any, targets: list[Target]) -> Any:
    probe = f"TARGETS = {targets!r}\n{PROBE}"
    return git_host.create_repo(
        unique("netprobe"),
        {
            "setup.py": SETUP_PY.format(probe=probe),
            "netprobe.py": "",
            "postBuild": POST_BUILD.format(probe=probe),
        },
        executable=["postBuild"],
    )


def _reports(log: Log, targets: list[Target]) -> dict[str, dict[str, Any]]:
    """What setup.py and postBuild found, from the build log: ``{who: {"probes": {target:
    outcome}, "routes": [[interface, gateway], ...]}}``."""
    found = {}
    for who in ("setup.py", "postBuild"):
        prefix = f"{who} network: "
        (line,) = [text for _, _, text in log.lines if text.startswith(prefix)]
        report = json.loads(line[len(prefix) :])
        report["probes"] = dict(zip(targets, report["probes"], strict=True))
        found[who] = report
    return found


def _env_record(key: str) -> dict[str, Any]:
    record = store.env_record(key)
    assert record is not None
    return record


# --- isolated -------------------------------------------------------------------------------


@requires_isolation
def test_build_code_reaches_nothing_on_this_machine(git_host: Any) -> None:
    with _targets_on_this_machine() as (ours, services):
        on_host = dict(zip(services, _probe_here(services), strict=True))
        targets = [*ours, *services]
        running: list[int] = []

        def postbuild_reported(line: str) -> None:  # its pasta runs, a child of this thread's
            if line.startswith("postBuild network: "):
                running.extend(pastas_of(os.getpid()))

        repo = _probe_repo(git_host, targets)
        result, log = build(resolved(git_host, repo), base=(), log=Log(postbuild_reported))

    assert dict(result.packages)["netprobe"] == "0.1"  # the build succeeds
    assert "Build commands get a network of their own" in log.text
    assert _env_record(result.environment_key)["network"] == "isolated"
    for who, report in _reports(log, targets).items():
        reached = {t: outcome for t, outcome in report["probes"].items() if outcome == "connected"}
        assert reached == {}, f"{who} reached {reached}; on the host: {on_host}"
        assert set(report["probes"].values()) <= {"refused", "unreachable"}, report
        # outbound is possible: a default route to pasta's interface, via the host's gateway
        assert report["routes"], report
        interface, gateway = report["routes"][0]
        assert interface != "lo" and gateway in _host_gateways()
    # the build's pasta is stopped with it
    assert running and all(exits(pasta, 10) for pasta in running)
    assert result.durations["network"] > 0


@requires_isolation
def test_a_proxy_on_the_loopback_is_all_an_isolated_build_reaches(
    git_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        tcp_listener(socket.AF_INET, "127.0.0.1") as proxy,
        tcp_listener(socket.AF_INET, "127.0.0.1") as other,
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy}")
        targets = [("127.0.0.1", proxy), ("127.0.0.1", other), ("127.0.0.1", 5432)]
        _, log = build(resolved(git_host, _probe_repo(git_host, targets)), base=())

    assert f"port {proxy} of this machine's loopback (HTTPS_PROXY)" in log.text
    for report in _reports(log, targets).values():
        assert list(report["probes"].values()) == ["connected", "refused", "refused"]


# --- the control, and the setting ---------------------------------------------------------------


def test_with_the_shared_network_the_same_probe_connects(git_host: Any, settings: Any) -> None:
    settings.BINDERY_BUILD_NETWORK = "shared"
    with _targets_on_this_machine() as (ours, services):
        on_host = dict(zip(services, _probe_here(services), strict=True))
        targets = [*ours, *services]
        result, log = build(resolved(git_host, _probe_repo(git_host, targets)), base=())

    line = "Build commands use this machine's network (BINDERY_BUILD_NETWORK is shared)"
    assert line in log.text and not result.warnings
    assert _env_record(result.environment_key)["network"] == "shared"
    for report in _reports(log, targets).values():
        assert report["probes"] == {**dict.fromkeys(ours, "connected"), **on_host}


def test_auto_shares_the_network_without_a_sandbox_and_says_so(
    git_host: Any, settings: Any
) -> None:
    settings.BINDERY_SANDBOX = "none"
    repo = git_host.create_repo(unique("no-sandbox"), {"requirements.txt": "toolz==1.0.0\n"})
    result, log = build(resolved(git_host, repo), base=())
    warning = (
        "Build commands use this machine's network (there is no bubblewrap sandbox): a "
        "repository's build code can reach every service listening on this machine"
    )
    assert [w for w in result.warnings if w.startswith(warning)]
    assert log.count(f"Warning: {warning}") == 1  # once per build
    assert _env_record(result.environment_key)["network"] == "shared"


def test_isolated_is_refused_where_it_is_impossible(git_host: Any, settings: Any) -> None:
    settings.BINDERY_SANDBOX = "none"
    settings.BINDERY_BUILD_NETWORK = "isolated"
    repo = git_host.create_repo(unique("must-isolate"), {"requirements.txt": "toolz==1.0.0\n"})
    with pytest.raises(BackendError) as info:
        build(resolved(git_host, repo), base=())
    assert info.value.code == "SANDBOX_UNAVAILABLE" and not info.value.permanent
    assert "BINDERY_BUILD_NETWORK is isolated, but there is no bubblewrap sandbox" in str(
        info.value.message
    )
    assert not list(Path(settings.BINDERY_ENVS_DIR).glob("*/pyvenv.cfg"))  # nothing ran


def test_the_setting_is_checked(settings: Any) -> None:
    settings.BINDERY_BUILD_NETWORK = "isolate"
    with pytest.raises(BackendError, match="must be auto, isolated or shared"):
        network_plan(sandboxed=True)
    settings.BINDERY_BUILD_NETWORK = "shared"
    assert network_plan(sandboxed=True) == (None, "BINDERY_BUILD_NETWORK is shared")
    settings.BINDERY_BUILD_NETWORK = "auto"
    assert network_plan(sandboxed=False) == (None, "there is no bubblewrap sandbox")
    tools, why = network_plan(sandboxed=True)
    assert (tools is not None) == builds_isolated() and (why == "") == (tools is not None)


def test_only_a_package_index_or_proxy_on_the_loopback_is_forwarded(settings: Any) -> None:
    settings.BINDERY_PACKAGE_INDEX = "http://localhost:3141/root/pypi/+simple/"
    environ = {
        "HTTPS_PROXY": "127.0.0.1:3128",  # no scheme: http
        "http_proxy": "http://127.0.0.1",
        "ALL_PROXY": "socks5://10.0.0.1:1080",  # elsewhere: reached through pasta anyway
        "https_proxy": "http://[::1]:8080",  # IPv4 only
    }
    assert loopback_services(environ) == [
        (80, "http_proxy"),
        (3128, "HTTPS_PROXY"),
        (3141, "the package index"),
    ]
    settings.BINDERY_PACKAGE_INDEX = "https://pypi.example.org/simple"
    assert loopback_services({}) == []
