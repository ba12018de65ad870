"""JupyterLab extensions from postBuild, with nothing beyond 127.0.0.1 (issue 8).

``jupyter labextension install <npm package>`` in postBuild is a whole JupyterLab build: npm
packs the extension, jlpm (JupyterLab's yarn 3) fetches every package of the application
from the npm registry, rspack bundles them into the environment's ``share/jupyter/lab``. No
test reaches a registry, so that install is shown by hand (issue 8's notes); these tests
cover what it needs of the local builder and its sandbox:

- a prebuilt extension that postBuild puts into the environment's
  ``share/jupyter/labextensions`` (where ``pip install`` of a package shipping one puts it) is
  listed by ``jupyter labextension list`` in a real session and handed to the browser;
- node, npm and jlpm run in postBuild with their caches and temporary files writable and
  outside the home: the home is the checkout, and yarn's mirror of the packages it fetched
  (~150 MB for one extension) would otherwise be copied into every session's working copy;
- a JupyterLab build that fails (its yarn without network here) fails the build with
  JupyterLab's reason, not its spinner, and with its debug log (yarn's output, which
  JupyterLab keeps out of the terminal) in the build log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from celery.contrib.testing.worker import start_worker

from apps import sandbox
from apps.accounts.models import User
from apps.accounts.tests.factories import UserFactory
from apps.builds.backends.local.runner import clean_line
from apps.builds.models import Build
from apps.builds.tests.helpers import Log, build, envs_beside_the_cache, resolved, unique
from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.tests.conftest import Hub, _start_hub, _stop_hub, wait_for
from apps.sessions.tests.jupyter import run_code
from portal.celery import app as celery_app
from portal.errors import BackendError

pytestmark = [pytest.mark.build, pytest.mark.django_db(transaction=True)]

EXTENSION = "@bindery-tests/prebuilt-extension"
REMOTE_ENTRY = "static/remoteEntry.5e1f6c2d9a7b.js"
# What a federated extension's build leaves (jupyter labextension build): its package.json
# with the entry point, and the module federation container the browser loads.
EXTENSION_FILES = {
    "binder/labextension/package.json": json.dumps(
        {
            "name": EXTENSION,
            "version": "0.1.0",
            "description": "A prebuilt JupyterLab extension shipped in a repository",
            "jupyterlab": {
                "extension": True,
                "_build": {"load": REMOTE_ENTRY, "extension": "./extension"},
            },
        },
        indent=2,
    ),
    f"binder/labextension/{REMOTE_ENTRY}": (
        'var _JUPYTERLAB;(_JUPYTERLAB=void 0===_JUPYTERLAB?{}:_JUPYTERLAB)["' + EXTENSION + '"]='
        '{get:()=>Promise.resolve(()=>({default:[{id:"' + EXTENSION + ':plugin",'
        "autoStart:!0,activate:()=>{}}]})),init:()=>{}};\n"
    ),
}

POSTBUILD = f"""#!/bin/bash
set -euo pipefail
# A prebuilt extension, laid out as `pip install` of a package shipping one lays it out.
target="$NB_PYTHON_PREFIX/share/jupyter/labextensions/{EXTENSION}"
mkdir -p "$target"
cp -R binder/labextension/. "$target/"

# What `jupyter labextension install` needs of the sandbox: node, npm and jlpm, with their
# caches and temporary files writable and outside the home (the checkout). No registry here.
export npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false
export YARN_ENABLE_NETWORK=0 YARN_ENABLE_TELEMETRY=0 YARN_NODE_LINKER=node-modules
echo "node $(node --version), npm $(npm --version), jlpm $(jlpm --version)"
for dir in "$TMPDIR" "$npm_config_cache" "$XDG_CACHE_HOME" "$YARN_GLOBAL_FOLDER"; do
  case "$dir/" in "$HOME"/*) echo "$dir is in the home"; exit 1;; esac
done
project="$TMPDIR/project"
mkdir -p "$project/dep"
echo '{{"name": "bindery-dep", "version": "1.0.0"}}' > "$project/dep/package.json"
echo 'module.exports = "bindery-dep ran";' > "$project/dep/index.js"
tarball=$(cd "$project/dep" && npm pack --silent --pack-destination "$project")
echo "{{\\"name\\": \\"project\\", \\"private\\": true,
  \\"dependencies\\": {{\\"bindery-dep\\": \\"file:./$tarball\\"}}}}" > "$project/package.json"
# yarn takes the tarball from the disk into its cache and its mirror (YARN_GLOBAL_FOLDER)
(cd "$project" && jlpm install)
test "$(cd "$project" && node -p 'require("bindery-dep")')" = "bindery-dep ran"
ls "$YARN_GLOBAL_FOLDER"/cache/bindery-dep-*.zip > /dev/null
test ! -e "$HOME/.yarn"
echo "jlpm's mirror is in the build's temporary directory"
"""

LIST = """
import subprocess
done = subprocess.run(["jupyter", "labextension", "list"], capture_output=True, text=True)
print(done.returncode)
print(done.stdout + done.stderr)
"""

# JupyterLab's build with its yarn told not to use the network: it fails as a build without
# the npm registry does ("npm dependencies failed to install"), in seconds.
FAILING_POSTBUILD = """#!/bin/bash
set -euo pipefail
export YARN_ENABLE_NETWORK=0
jupyter lab build
"""


@pytest.fixture(scope="module")
def lab_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of this module's own; environments beside the shared uv cache (hardlinks)."""
    root = tmp_path_factory.mktemp("labextensions")
    with envs_beside_the_cache() as envs:
        hub = _start_hub(root, envs / "unused", "hub", {"BINDERY_ENVS_DIR": str(envs)})
        hub.dirs["envs"] = envs
        try:
            yield hub
        finally:
            _stop_hub(hub)


@pytest.fixture
def portal(lab_hub: Hub, git_host: Any, settings: Any) -> Iterator[Hub]:
    """Settings pointing at the hub, offline builds, and a live Celery worker."""
    hub = lab_hub
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
            log = "\n".join(build.log_lines.order_by("n").values_list("text", flat=True))
            pytest.fail(f"launch failed: {session.error_message}\n{log[-6000:]}")
        return session if session.status == "ready" else None

    result: Session = wait_for(done, 240, f"session {session_id} to be ready")
    return result


@pytest.mark.hub
def test_postbuild_installs_a_prebuilt_labextension_the_session_lists(
    portal: Hub, git_host: Any
) -> None:
    repo = git_host.create_repo(
        f"labext/prebuilt-{uuid.uuid4().hex[:8]}",
        {**EXTENSION_FILES, "binder/postBuild": POSTBUILD},
        executable=["binder/postBuild"],
    )
    user = cast(User, UserFactory(username=f"labext-{uuid.uuid4().hex[:6]}"))
    session = _ready(services.launch(user, repo_url=repo.url).pk)
    build = Build.objects.get(pk=session.build_id)
    result: dict[str, Any] = build.result or {}
    log = list(build.log_lines.order_by("n").values_list("text", flat=True))
    assert "jlpm's mirror is in the build's temporary directory" in log
    assert not any(line.startswith("postBuild changed") for line in log), log
    # nothing of npm's or yarn's in the checkout every session copies
    checkout = Path(result["checkout_path"])
    assert sorted(p.name for p in checkout.iterdir() if p.name != ".git") == ["binder"]

    base = session.url.split(f"/{session.server_name}/", 1)[0] + f"/{session.server_name}"
    token = services.session_token(session)
    auth = {"Authorization": f"token {token}"}
    try:
        state, out = run_code(base, token, LIST, timeout=120)
        assert state == "ok", out
        code, _, listing = out.partition("\n")
        assert code == "0", listing
        lines = [clean_line(line) for line in listing.splitlines()]
        labextensions = str(Path(result["environment_path"]) / "share/jupyter/labextensions")
        assert labextensions in lines, listing
        assert f"{EXTENSION} v0.1.0 enabled OK" in lines, listing
        # the page hands it to the browser, and the server serves its entry point
        page = requests.get(f"{base}/lab", headers=auth, timeout=30)
        page.raise_for_status()
        found = re.search(
            r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
            page.text,
            re.S,
        )
        assert found, page.text[:2000]
        loaded = {e["name"]: e for e in json.loads(found.group(1))["federated_extensions"]}
        assert loaded[EXTENSION]["load"] == REMOTE_ENTRY
        entry = requests.get(
            f"{base}/lab/extensions/{EXTENSION}/{REMOTE_ENTRY}", headers=auth, timeout=30
        )
        assert entry.status_code == 200
        assert entry.text == EXTENSION_FILES[f"binder/labextension/{REMOTE_ENTRY}"]
    finally:
        services.request_stop(session)


def test_a_failing_jupyterlab_build_fails_with_its_reason_and_its_debug_log(
    git_host: Any, settings: Any, tmp_path: Path
) -> None:
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    repo = git_host.create_repo(
        unique("labext-failing"),
        {"binder/postBuild": FAILING_POSTBUILD},
        executable=["binder/postBuild"],
    )
    log = Log()
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        with pytest.raises(BackendError) as failed:
            build(resolved(git_host, repo), base=None, log=log)
    assert failed.value.code == "POSTBUILD_FAILED"
    # JupyterLab's reason, not the spinner it draws with backspaces nor its pointer at a file
    # in the sandbox that nobody can open
    assert str(failed.value) == (
        "binder/postBuild failed with exit status 1: "
        "RuntimeError: npm dependencies failed to install"
    )
    text = log.text
    header = re.search(r"JupyterLab's debug log jupyterlab-debug-\w+\.log ends.*\n", text)
    assert header, text[-3000:]
    # yarn's own words, which only the debug log held (what yarn says exactly depends on how
    # far it got offline: blocked downloads here, an earlier step elsewhere)
    copied = text[header.end() :].splitlines()
    assert any(line.startswith("➤ YN") for line in copied), text[-3000:]
    assert not any("YN0013:" in line for line in copied)  # its download progress is left out


def test_the_end_of_a_debug_log_is_read_without_following_a_symlink(tmp_path: Path) -> None:
    log = tmp_path / "jupyterlab-debug-x.log"
    log.write_bytes(b"start\n" + b"x" * 100 + b"\nthe end\n")
    assert sandbox.read_nofollow(tmp_path, log.name, limit=12, tail=True) == b"xxx\nthe end\n"
    with pytest.raises(OSError):
        sandbox.read_nofollow(tmp_path, log.name, limit=12)  # too large, without tail
    (tmp_path / "planted.log").symlink_to(log)
    with pytest.raises(OSError):
        sandbox.read_nofollow(tmp_path, "planted.log", limit=12, tail=True)
