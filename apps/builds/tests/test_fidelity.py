"""The fidelity suite: repo2docker's own test layout, for what the local builder supports.

Each case under ``fidelity/`` is a repository (adapted from a case of repo2docker's ``tests/``,
named in its README) with a ``verify`` script. For each: a real build of it from the loopback
git server (uv, offline, from the shared cache; postBuild in the build's sandbox), a real
session of it in the test JupyterHub, and ``verify`` run there from a kernel, with the
kernel's environment (the server's, after ``start``), as repo2docker runs it in the image
with its entrypoint and ``start``. ``verify`` fails when the runtime contract breaks
(docs/architecture.md, "repo2docker's runtime contract").

One hub for the module, one build and one session per case.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from celery.contrib.testing.worker import start_worker

from apps.accounts.models import User
from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.builds.tests.helpers import envs_beside_the_cache
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import Hub, _start_hub, _stop_hub, wait_for
from apps.sessions.tests.jupyter import run_code
from portal.celery import app as celery_app

pytestmark = [pytest.mark.hub, pytest.mark.build, pytest.mark.django_db(transaction=True)]

CASES = Path(__file__).parent / "fidelity"

RUN_VERIFY = """
import subprocess
done = subprocess.run(["./verify"], capture_output=True, text=True)
print(done.returncode)
print(done.stdout + done.stderr)
"""


def _wheel(name: str, version: str, source: str) -> bytes:
    """A pure-Python wheel of one module (a postBuild's `pip install` needs no index then)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bindery-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256="
        + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        + f",{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


# what the tests add to a case's files (binary, or made at test time)
EXTRA_FILES: dict[str, dict[str, bytes]] = {
    "binder_dir": {
        "binder/wheels/there-1.0-py3-none-any.whl": _wheel("there", "1.0", 'NAME = "there"\n')
    },
}


def case_files(case: str) -> tuple[dict[str, str | bytes], list[str]]:
    """A case's files (dotfiles too) and those that are executable, as its repository holds
    them."""
    root = CASES / case
    files: dict[str, str | bytes] = {}
    executable = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            files[rel] = path.read_bytes()
            if os.access(path, os.X_OK):
                executable.append(rel)
    files.update(EXTRA_FILES.get(case, {}))
    return files, executable


@pytest.fixture(scope="module")
def fidelity_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of this module's own (the default configuration: sandboxed where possible); the
    sessions run the environments the builds make, so it needs no environment of its own.

    The environments are made beside the shared uv cache, where the portal keeps its own:
    uv hardlinks from the cache there instead of copying (half of a build's time)."""
    root = tmp_path_factory.mktemp("fidelity")
    with envs_beside_the_cache() as envs:
        hub = _start_hub(root, envs / "unused", "hub", {"BINDERY_ENVS_DIR": str(envs)})
        hub.dirs["envs"] = envs
        try:
            yield hub
        finally:
            _stop_hub(hub)


@pytest.fixture
def portal(fidelity_hub: Hub, git_host: Any, settings: Any) -> Iterator[Hub]:
    """Settings pointing at the hub, offline builds, and a live Celery worker."""
    hub = fidelity_hub
    settings.BINDERY_HUB_API_URL = hub.api_url
    settings.BINDERY_HUB_URL = hub.public_url
    settings.BINDERY_HUB_TOKEN = hub.token
    settings.BINDERY_HUB_DIR = hub.dirs["hub"]
    settings.BINDERY_ENVS_DIR = hub.dirs["envs"]
    settings.BINDERY_CHECKOUTS_DIR = hub.dirs["checkouts"]
    settings.BINDERY_SESSIONS_DIR = hub.dirs["sessions"]
    settings.BINDERY_VOLUMES_DIR = hub.dirs["volumes"]
    settings.BINDERY_UV_OFFLINE = True
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=60):  # fmt: skip
        yield hub


def _ready(session_id: int) -> Session:
    def done() -> Session | None:
        session = Session.objects.get(pk=session_id)
        if session.status == "failed":
            build = Build.objects.get(pk=session.build_id)
            tail = build.log_lines.order_by("-n").values_list("text", flat=True)[:200]
            log = "\n".join(reversed(list(tail)))
            pytest.fail(
                f"launch failed: {session.error_code} {session.error_message} "
                f"(build: {build.error_code} {build.error_message})\n{log}"
            )
        return session if session.status == "ready" else None

    result: Session = wait_for(done, 300, f"session {session_id} to be ready")
    return result


def _launch_and_verify(git_host: Any, case: str, probe: str = "") -> tuple[Session, str]:
    """Build and launch ``case``; run its ``verify`` (and ``probe``, code for the kernel) in
    the session. Returns the ready session and what ``probe`` printed."""
    files, executable = case_files(case)
    repo = git_host.create_repo(f"fidelity/{case}-{uuid.uuid4().hex[:8]}", files,
                                executable=executable)  # fmt: skip
    user = cast(User, UserFactory(username=f"fid-{case.replace('_', '-')}"[:30]))
    session = _ready(services.launch(user, repo_url=repo.url).pk)
    base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
    token = services.session_token(session)
    try:
        state, out = run_code(base, token, RUN_VERIFY, timeout=120)
        assert state == "ok", out
        code, _, output = out.partition("\n")
        assert code == "0", f"verify failed in the session of {case}:\n{output}"
        assert output.strip().endswith("verified"), output
        probed = ""
        if probe:
            state, probed = run_code(base, token, probe)
            assert state == "ok", probed
        return session, probed
    finally:
        services.request_stop(session)


def test_requirements_setup_py_repo_dir_home_and_path(portal: Hub, git_host: Any) -> None:
    session, probed = _launch_and_verify(
        git_host, "repo_dir", "import os; print(FIDELITY_STARTUP); print(os.getcwd())"
    )
    # the kernel ran the IPython startup file from the repository's dotfiles (its home)
    startup, cwd = probed.strip().splitlines()
    assert startup == "from the repository's .ipython"
    assert cwd == os.path.join(portal.dirs["sessions"], session.server_name)


def test_binder_dir_postbuild_and_start(portal: Hub, git_host: Any) -> None:
    _launch_and_verify(git_host, "binder_dir")


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_dot_binder_npm_global_and_sh_start(portal: Hub, git_host: Any) -> None:
    _launch_and_verify(git_host, "dot_binder")


@pytest.mark.parametrize("case", ["pipfile", "environment_yml"])
def test_package_configurations(portal: Hub, git_host: Any, case: str) -> None:
    _launch_and_verify(git_host, case)


def test_every_case_has_a_verify_script_and_a_test() -> None:
    cases = sorted(p.name for p in CASES.iterdir() if p.is_dir())
    assert cases == sorted(["repo_dir", "binder_dir", "dot_binder", "pipfile", "environment_yml"])
    for case in cases:
        assert os.access(CASES / case / "verify", os.X_OK), case
        assert (CASES / case / "README.md").is_file(), case
