"""Every Python a runtime.txt names and this machine has: real builds (uv, offline from the
shared cache, each minor's own base set) and real launches through a test JupyterHub, where a
kernel reports that exact version and imports the repository's requirement. A minor the
machine lacks falls back to the default Python, said in the log and the receipt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from celery.contrib.testing.worker import start_worker

from apps.accounts.tests.factories import UserFactory
from apps.builds.api.serializers import receipt_for
from apps.builds.backends.config import read_plan
from apps.builds.backends.local import LocalBuilder
from apps.builds.backends.local.interpreters import (
    MIN_PYTHON,
    base_requirements_file,
    default_interpreter,
    find_interpreter,
    read_base_requirements,
)
from apps.builds.models import Build
from apps.builds.services import result_to_json
from apps.builds.tests.helpers import build, resolved
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import Hub, _start_hub, _stop_hub, wait_for
from apps.sessions.tests.jupyter import run_code
from apps.testing import require
from portal.celery import app as celery_app

REQUIREMENT = "toolz==1.0.0"
# The minors with a launch test here (3.11 is the default, launched by every other hub test),
# each with the requirement its repository asks for (toolz 1.0 needs 3.8).
MINORS = {
    "3.6": ("wheel", "0.37.1"),
    "3.7": ("tabulate", "0.9.0"),
    "3.8": ("toolz", "1.0.0"),
    "3.9": ("toolz", "1.0.0"),
    "3.10": ("toolz", "1.0.0"),
    "3.12": ("toolz", "1.0.0"),
    "3.13": ("toolz", "1.0.0"),
}
BYTECODE = "Byte-compiling some packages failed; they are compiled when imported (SyntaxError"


@pytest.fixture(scope="module")
def python_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of this module's own, beside the other test hubs (same environments and
    checkouts directories); the environments it runs come from the builds under test."""
    root = tmp_path_factory.getbasetemp() / "bindery-hub"
    started = _start_hub(root, root / "envs" / "unused", "hub-pythons", {})
    yield started
    _stop_hub(started)


@pytest.fixture
def portal(python_hub: Hub, git_host: Any, settings: Any) -> Iterator[Hub]:
    """Settings pointing at the hub, offline builds with the default builder (each Python's
    own base set), and a live Celery worker."""
    settings.BINDERY_HUB_API_URL = python_hub.api_url
    settings.BINDERY_HUB_URL = python_hub.public_url
    settings.BINDERY_HUB_TOKEN = python_hub.token
    for name in ("hub", "envs", "checkouts", "sessions", "volumes"):
        setattr(settings, f"BINDERY_{name.upper()}_DIR", python_hub.dirs[name])
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_IDLE_TIMEOUT = 600
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield python_hub


def wait_status(session_id: int, *statuses: str, timeout: float = 280) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status in statuses:
            return session
        if session.status == "failed":
            build_row = Build.objects.get(pk=session.build_id)
            pytest.fail(f"launch failed: {session.error_code} {session.error_message} "
                        f"(build: {build_row.error_message})")  # fmt: skip
        return None

    return wait_for(done, timeout, f"session {session_id} to be {'/'.join(statuses)}")


@pytest.mark.hub
@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("minor", MINORS)
def test_runtime_txt_python_launches_a_kernel_of_that_version(
    portal: Hub, token_client: Any, git_host: Any, minor: str
) -> None:
    require(find_interpreter(minor), f"Python {minor} is not installed on this machine")
    package, pinned = MINORS[minor]
    repo = git_host.create_repo(
        f"org/py{minor.replace('.', '')}-{uuid.uuid4().hex[:8]}",
        {"runtime.txt": f"python-{minor}\n", "requirements.txt": f"{package}=={pinned}\n"},
    )
    client = token_client(UserFactory())
    created = client.post("/api/v1/sessions/", {"repo_url": repo.url}, format="json")
    assert created.status_code == 201, created.json()
    session = wait_status(created.json()["id"], "ready")

    receipt = client.get(f"/api/v1/builds/{session.build_id}/").json()["receipt"]
    assert receipt["python_version"].startswith(f"{minor}.")
    # 3.6 and 3.7 only: files no module imports do not compile there (3.7: debugpy's test
    # resources with deliberate syntax errors; 3.6: a SQLAlchemy dev tool), and the log says so
    expected = 1 if minor in ("3.6", "3.7") else 0
    assert len(receipt["warnings"]) == expected, receipt["warnings"]
    assert all(w.startswith(BYTECODE) for w in receipt["warnings"])
    packages = {p["name"]: p["version"] for p in receipt["packages"]}
    assert packages[package] == pinned
    for line in read_base_requirements(base_requirements_file(minor)):
        name, version = line.split("==")
        assert packages[name] == version, name  # this minor's own base set
    log = client.get(f"/api/v1/builds/{session.build_id}/log/").content.decode()
    pins = read_base_requirements(base_requirements_file(minor))
    assert f"Base packages: {', '.join(pins)}" in log

    base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
    token = services.session_token(session)
    # the server speaks the hub's API: the hub's OAuth admits the session's token
    status = requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"})
    assert status.status_code == 200
    state, out = run_code(base, token, f"import sys, {package}\n"
                          f"print(sys.version_info[:2], {package}.__version__)")  # fmt: skip
    assert state == "ok", out
    assert out.strip() == f"{tuple(int(p) for p in minor.split('.'))} {pinned}"

    services.request_stop(session)
    wait_status(session.pk, "stopped", timeout=60)


@pytest.mark.parametrize("asked", ["3.14", "3.5"])
def test_a_python_the_machine_lacks_falls_back_with_a_warning_in_log_and_receipt(
    git_host: Any, asked: str
) -> None:
    require(find_interpreter(asked) is None or asked == "3.5", f"Python {asked} is installed")
    repo = git_host.create_repo(
        f"org/missing-{uuid.uuid4().hex[:8]}",
        {"runtime.txt": f"python-{asked}\n", "requirements.txt": f"{REQUIREMENT}\n"},
    )
    result, log = build(resolved(git_host, repo))
    default = default_interpreter().version
    assert result.python_version == default
    warning = next(w for w in result.warnings if f"Python {asked}" in w)
    assert "runtime.txt" in warning and f"using Python {default} instead" in warning
    assert f"Warning: {warning}" in log.text
    assert warning in receipt_for(Build(result=result_to_json(result)))["warnings"]  # type: ignore[index]


def test_a_python_older_than_the_oldest_base_set_falls_back(git_host: Any) -> None:
    older = f"{MIN_PYTHON[0]}.{MIN_PYTHON[1] - 1}"  # 3.5: no base set exists for it
    repo = git_host.create_repo(
        f"org/old-{uuid.uuid4().hex[:8]}",
        {"runtime.txt": f"python-{older}\n", "requirements.txt": f"{REQUIREMENT}\n"},
    )
    result, log = build(resolved(git_host, repo))
    assert result.python_version == default_interpreter().version
    warning = next(w for w in result.warnings if f"Python {older}" in w)
    assert f"older than {MIN_PYTHON[0]}.{MIN_PYTHON[1]}" in warning
    assert f"Warning: {warning}" in log.text


def test_each_python_gets_its_own_base_set_and_key(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(f"{REQUIREMENT}\n")
    plan = read_plan(tmp_path)
    builder = LocalBuilder()
    default = default_interpreter()
    assert builder.base_set(default)[0] == base_requirements_file(default.minor).name
    keys = {builder.environment_key(plan, tmp_path, default)}
    for minor in ("3.6", "3.7", "3.8", "3.9", "3.10"):
        assert base_requirements_file(minor).name == f"base-requirements-{minor}.txt"
        lines = read_base_requirements(base_requirements_file(minor))
        other = LocalBuilder(base_requirements=lines)  # the default Python, another base set
        keys.add(other.environment_key(plan, tmp_path, default))
    assert len(keys) == 6
    assert base_requirements_file("3.13").name == "base-requirements.txt"


def test_versions_lists_the_pythons_builds_can_use(client: Any) -> None:
    body = client.get("/versions").json()
    pythons = {p["version"].rsplit(".", 1)[0]: p for p in body["pythons"]}
    default = default_interpreter()
    assert pythons[default.minor]["default"] is True
    assert sum(p["default"] for p in body["pythons"]) == 1
    for minor in ("3.6", "3.7", "3.8", "3.9", "3.10", "3.12", "3.13"):
        found = find_interpreter(minor)
        if found is None:
            assert minor not in pythons
        else:
            assert pythons[minor]["version"] == found.version
            assert pythons[minor]["base_set"] == base_requirements_file(minor).name
    assert "2.7" not in pythons  # on this machine, but Python 2 is refused
