"""uv inside bubblewrap: what a repository's build code can reach while the local builder
installs it, and how uv still hardlinks from its cache.

Real builds of repositories on the loopback git server, offline from the shared uv cache.
The probe is a ``setup.py``, which setuptools executes while uv builds the repository's
package (``uv pip install .``): it tries to read files planted beside the portal's secrets,
in its code, in the home directory, in the host's /tmp and beside other checkouts, to read
the portal's real secrets, to write next to all of those and into ``.git``, and records
what it managed in ``sandbox-report.json`` in its checkout. The same probe run without the
sandbox shows it does detect all of that.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.builds.backends import store
from apps.builds.backends.base import BuildResult
from apps.builds.backends.local.interpreters import default_interpreter
from apps.builds.backends.local.steps import sandbox_mode, uv_binds
from apps.builds.backends.local.uv_tool import uv_binary
from apps.builds.tests.helpers import build, envs_beside_the_cache, resolved, unique
from apps.testing import require
from portal.errors import BackendError

pytestmark = pytest.mark.build

SETUP_PY = """\
import json, os, sys
from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
report = {"read": {}, "wrote": {}, "writable": {}, "var": None}
for path in READ:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        report["read"][path] = True
    except OSError:
        report["read"][path] = False
for path in WRITE:
    try:
        with open(path, "a") as handle:
            handle.write("written by a repository's setup.py\\n")
        report["wrote"][path] = True
    except OSError:
        report["wrote"][path] = False
for path in EXISTING:
    report["writable"][path] = os.access(path, os.W_OK)
try:
    report["var"] = sorted(os.listdir(VAR))
except OSError:
    pass
with open(os.path.join(here, "sandbox-report.json"), "w") as handle:
    json.dump(report, handle)
setup(name="probe-pkg", version="0.1", py_modules=["probe_pkg"])
"""


@pytest.fixture(autouse=True)
def _sandboxed(settings: Any, tmp_path: Path, git_host: Any) -> Iterator[Path]:
    """bubblewrap required, environments beside the uv cache, checkouts apart."""
    settings.BINDERY_SANDBOX = "auto"
    require(sandbox_mode() == "bwrap", "bubblewrap missing or cannot create namespaces here")
    settings.BINDERY_SANDBOX = "bwrap"
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        yield envs


@pytest.fixture
def places(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Host directories a repository's build code must neither read nor write."""
    found = {
        "var": Path(django_settings.VAR_DIR),  # the portal's secrets, beside BINDERY_BUILD_DIR
        "code": Path(django_settings.BASE_DIR) / "portal",
        "home": Path.home(),
        "host_tmp": tmp_path,
        "checkouts": tmp_path / "checkouts",  # every repository's checkout
    }
    found["checkouts"].mkdir(exist_ok=True)
    tag = unique("sandbox-probe")
    planted = {name: where / f".{tag}-planted" for name, where in found.items()}
    written = {name: where / f".{tag}-written" for name, where in found.items()}
    for path in planted.values():
        path.write_text("a secret the build must not read\n")
    try:
        yield {
            **{f"planted_{name}": path for name, path in planted.items()},
            **{f"written_{name}": path for name, path in written.items()},
        }
    finally:
        for path in [*planted.values(), *written.values()]:
            path.unlink(missing_ok=True)


def probe_repo(git_host: Any, places: dict[str, Path]) -> tuple[Any, dict[str, list[str]]]:
    """A repository whose setup.py probes ``places``, the portal's real secrets and files."""
    var = Path(django_settings.VAR_DIR)
    database = str(django_settings.DATABASES["default"]["NAME"])
    real = [var / "secret_key", var / "bindery_encryption_key", var / "bindery_hub_token"]
    targets = {
        "READ": [
            *(str(p) for n, p in places.items() if n.startswith("planted_")),
            *(str(p) for p in real if p.is_file()),
            *([database] if Path(database).is_file() else []),
            str(Path(django_settings.BASE_DIR) / "portal" / "settings.py"),
        ],
        "WRITE": [str(p) for n, p in places.items() if n.startswith("written_")],
        "EXISTING": [uv_binary(), default_interpreter().path, default_interpreter().prefix],
    }
    head = "".join(f"{name} = {json.dumps(paths)}\n" for name, paths in targets.items())
    head += f"VAR = {json.dumps(str(var))}\n"
    setup_py = SETUP_PY.replace("\nhere = ", f"\n{head}here = ")
    repo = git_host.create_repo(
        unique("probe"),
        {
            "setup.py": setup_py,
            "probe_pkg.py": "PROBED = True\n",
            "requirements.txt": "toolz==1.0.0\n",
        },
    )
    return repo, targets


def report_of(result: BuildResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(result.checkout_path, "sandbox-report.json").read_text())
    return data


def env_file(result: BuildResult, *parts: str) -> Path:
    (found,) = Path(result.environment_path).glob(f"lib/python*/site-packages/{'/'.join(parts)}")
    return found


def env_record(result: BuildResult) -> dict[str, Any]:
    record = store.env_record(result.environment_key)
    assert record is not None
    return record


VAR_DIR = str(django_settings.VAR_DIR)


# --- what build code can reach -----------------------------------------------------------


def test_setup_py_cannot_read_or_write_outside_its_checkout_and_environment(
    git_host: Any, places: dict[str, Path]
) -> None:
    repo, targets = probe_repo(git_host, places)

    result, log = build(resolved(git_host, repo), base=())

    assert dict(result.packages)["probe-pkg"] == "0.1"  # the build still succeeds
    assert "uv runs in a bubblewrap sandbox" in log.text
    report = report_of(result)  # setup.py ran in the checkout, and could write there
    assert set(report["read"]) == set(targets["READ"])
    assert [path for path, ok in report["read"].items() if ok] == []
    # Under /tmp a write lands in the sandbox's private tmpfs, gone with it; elsewhere
    # nothing outside the checkout and the build directory is writable at all.
    wrote = [path for path, ok in report["wrote"].items() if ok]
    assert [path for path in wrote if not path.startswith("/tmp/")] == []
    assert [p for n, p in places.items() if n.startswith("written_") and p.exists()] == []
    assert [path for path, ok in report["writable"].items() if ok] == []  # uv, Python
    # Of var/, only BINDERY_BUILD_DIR is seen. (When the project itself lives under /tmp,
    # as in a CI clone, var/ is on the sandbox's private tmpfs: the probe's own writes
    # land there, visible to it alone.)
    own_writes = {Path(path).name for path in wrote if Path(path).parent == Path(VAR_DIR)}
    assert set(report["var"] or []) - own_writes <= {"build"}
    assert env_record(result)["uv_sandbox"] == "bwrap"
    # the build backend wrote its build tree into the checkout, as it does on the host
    assert (
        list(Path(result.checkout_path).glob("*.egg-info"))
        or Path(result.checkout_path, "build").is_dir()
    )
    # and the package it built is the repository's, installed in the environment
    python = Path(result.environment_path) / "bin" / "python"
    done = subprocess.run(
        [python, "-c", "import probe_pkg; print(probe_pkg.PROBED)"],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    assert done.stdout.strip() == "True"


def test_setup_py_cannot_change_the_checkouts_git_directory(
    git_host: Any, places: dict[str, Path]
) -> None:
    """git runs on the host later (git status, for postBuild's overlay)."""
    repo = git_host.create_repo(
        unique("git-probe"),
        {
            "setup.py": "import os\nfrom setuptools import setup\n"
            "try:\n    open('.git/config', 'a').write('[core]\\n\\tfsmonitor = evil\\n')\n"
            "    open('changed-git.txt', 'w').write('yes')\n"
            "except OSError:\n    open('changed-git.txt', 'w').write('no')\n"
            "setup(name='git-probe', version='0.1', py_modules=[])\n",
        },
    )
    result, _ = build(resolved(git_host, repo), base=())
    assert Path(result.checkout_path, "changed-git.txt").read_text() == "no"
    assert "fsmonitor" not in Path(result.checkout_path, ".git", "config").read_text()


def test_without_the_sandbox_the_same_probe_reaches_everything(
    git_host: Any, places: dict[str, Path], settings: Any
) -> None:
    """The probe's control: it does detect reads and writes when nothing stops them."""
    settings.BINDERY_SANDBOX = "none"
    repo, targets = probe_repo(git_host, places)

    result, log = build(resolved(git_host, repo), base=())

    report = report_of(result)
    assert all(report["read"].values()) and set(report["read"]) == set(targets["READ"])
    assert all(report["wrote"].values())
    assert all(report["writable"].values())
    assert (
        "secret_key" in (report["var"] or [])
        or not (Path(django_settings.VAR_DIR) / "secret_key").exists()
    )
    assert "uv runs in a bubblewrap sandbox" not in log.text
    assert any("built without a sandbox" in w for w in result.warnings)
    assert env_record(result)["uv_sandbox"] == "none"


# --- hardlinks from the cache -----------------------------------------------------------


def cache_inodes(name: str) -> set[int]:
    cache = Path(django_settings.BINDERY_UV_CACHE_DIR)
    return {path.stat().st_ino for path in cache.glob(f"archive-v0/*/{name}")}


def test_uv_hardlinks_from_its_cache_when_build_dir_holds_both(git_host: Any) -> None:
    repo = git_host.create_repo(unique("linked"), {"requirements.txt": "tabulate==0.9.0\n"})

    result, log = build(resolved(git_host, repo))

    assert "uv runs in a bubblewrap sandbox" in log.text
    assert "instead of hardlinking" not in log.text
    assert "Invalid `SSL_CERT_FILE`" not in log.text  # the certificates are there when set
    installed = env_file(result, "tabulate", "__init__.py").stat()
    assert installed.st_nlink > 1
    assert installed.st_ino in cache_inodes("tabulate/__init__.py")
    assert env_record(result)["uv_link_mode"] == "hardlink"


def test_environments_apart_from_the_cache_build_by_copying(
    git_host: Any, settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BINDERY_ENVS_DIR = tmp_path / "envs"  # outside BINDERY_BUILD_DIR
    repo = git_host.create_repo(unique("copied"), {"requirements.txt": "tabulate==0.9.0\n"})

    result, log = build(resolved(git_host, repo))

    assert Path(result.environment_path).is_relative_to(tmp_path / "envs")
    assert "uv runs in a bubblewrap sandbox" in log.text
    copying = next(line for _, _, line in log.lines if "instead of hardlinking" in line)
    assert str(tmp_path) not in copying  # why, with the directories, is the operators'
    why = next(r.getMessage() for r in caplog.records if "instead of hardlinking" in r.getMessage())
    assert "are apart" in why and str(tmp_path / "envs") in why
    installed = env_file(result, "tabulate", "__init__.py").stat()
    assert installed.st_nlink == 1
    assert installed.st_ino not in cache_inodes("tabulate/__init__.py")
    assert env_record(result)["uv_link_mode"] == "copy"
    assert dict(result.packages)["tabulate"] == "0.9.0"


# --- what is bound ---------------------------------------------------------------------------


def test_build_dir_is_bound_whole_only_without_portal_directories(
    settings: Any, tmp_path: Path, _sandboxed: Path
) -> None:
    env = _sandboxed / "somekey"
    build_dir = Path(settings.BINDERY_BUILD_DIR)
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    assert uv_binds(env) == ((build_dir,), "")
    assert uv_binds() == ((build_dir,), "")

    settings.BINDERY_CHECKOUTS_DIR = build_dir / "checkouts"  # other repositories' code
    writable, why = uv_binds(env)
    assert writable == (env, cache)
    assert f"also holds {build_dir / 'checkouts'}" in why

    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    settings.BINDERY_BUILD_DIR = settings.VAR_DIR  # var/ itself: the portal's secrets
    writable, why = uv_binds(env)
    assert writable == (env, cache)
    assert f"BINDERY_BUILD_DIR ({settings.VAR_DIR}) also holds {settings.VAR_DIR}" in why
    assert uv_binds() == ((cache,), why)


def test_a_uv_cache_holding_portal_directories_is_refused(
    git_host: Any, settings: Any, tmp_path: Path
) -> None:
    settings.BINDERY_ENVS_DIR = tmp_path / "envs"
    settings.BINDERY_UV_CACHE_DIR = settings.VAR_DIR
    repo = git_host.create_repo(unique("cache-in-var"), {"requirements.txt": "toolz\n"})
    with pytest.raises(BackendError) as info:
        build(resolved(git_host, repo))
    assert info.value.code == "SANDBOX_UNAVAILABLE"
    assert f"BINDERY_UV_CACHE_DIR ({settings.VAR_DIR}) holds" in info.value.message
    assert not list((tmp_path / "envs").glob("*/pyvenv.cfg"))
