"""The local builder against real repositories served over HTTP on 127.0.0.1, built with real
uv runs, offline, from the shared uv cache (bin/warm-test-cache fills it).

Most tests use a one-package base set (SMALL_BASE) so each build takes well under a second;
``jupyter_build`` builds once with the real base set (jupyterhub, jupyterlab, ipykernel, pip)
and is shared by the tests that need a real Jupyter environment.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from apps.builds.api.serializers import receipt_for
from apps.builds.backends import disk, store
from apps.builds.backends.base import BuildRequest, BuildResult
from apps.builds.backends.config import read_plan
from apps.builds.backends.local import LocalBuilder
from apps.builds.backends.local.interpreters import default_interpreter, find_interpreter
from apps.builds.backends.local.steps import sandbox_mode
from apps.builds.models import Build
from apps.builds.services import result_to_json
from apps.builds.tests.helpers import (
    SMALL_BASE,
    Gate,
    Log,
    build,
    builds_isolated,
    children_of,
    envs_beside_the_cache,
    exits,
    pastas_of,
    resolved,
    unique,
)
from apps.repos.types import ResolvedRepo
from portal.errors import BackendError

pytestmark = pytest.mark.build

# What an install says in the build log (uv's milestones, reworded by backends.progress).
UV_LINES = ("Resolved ", "Installed ", "Creating the virtual environment", "Compiled bytecode")


# --- helpers --------------------------------------------------------------------------------


def refused(repo: ResolvedRepo) -> tuple[BackendError, Log]:
    log = Log()
    with pytest.raises(BackendError) as info:
        LocalBuilder(base_requirements=SMALL_BASE).build(BuildRequest(build_id=1, repo=repo), log)
    return info.value, log


def env_python(result: BuildResult) -> str:
    return str(Path(result.environment_path) / "bin" / "python")


def run_in_env(result: BuildResult, code: str) -> str:
    return subprocess.run(
        [env_python(result), "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.strip()


def environment_dirs() -> list[Path]:
    envs = Path(django_settings.BINDERY_ENVS_DIR)
    return [p for p in envs.iterdir() if p.is_dir() and not p.name.endswith(".overlay")]


def use_fresh_dirs(settings: Any, root: Path) -> None:
    settings.BINDERY_ENVS_DIR = root / "envs"
    settings.BINDERY_CHECKOUTS_DIR = root / "checkouts"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="module")
def shared_envs() -> Iterator[Path]:
    """The module's environments, beside the uv cache as the portal keeps them (hardlinks)."""
    with envs_beside_the_cache() as envs:
        yield envs


@pytest.fixture(autouse=True)
def _builder_settings(settings: Any, build_root: Path, shared_envs: Path, git_server: Any) -> None:
    settings.BINDERY_ENVS_DIR = shared_envs
    settings.BINDERY_CHECKOUTS_DIR = build_root / "checkouts"
    settings.BINDERY_ALLOWED_GIT_HOSTS = [git_server.host]
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    settings.BINDERY_SANDBOX = "auto"


@pytest.fixture(scope="module")
def probes(build_root: Path) -> dict[str, Path]:
    """Host paths a sandboxed postBuild must not be able to write."""
    return {
        "beside_the_builds": build_root / "written-by-postbuild.txt",
        "in_the_uv_cache": Path(django_settings.BINDERY_UV_CACHE_DIR) / unique("postbuild-probe"),
    }


@pytest.fixture(scope="module")
def jupyter_repo(git_server: Any, probes: dict[str, Path]) -> Any:
    post_build = f"""#!/bin/bash
set -e
echo "postBuild runs with $(command -v python)"
mkdir -p data
echo generated > data/generated.txt
echo "from postBuild" > "$VIRTUAL_ENV/share/postbuild-marker.txt"
for target in {probes["beside_the_builds"]} {probes["in_the_uv_cache"]}; do
  if echo x > "$target" 2>/dev/null; then echo "wrote $target" >> sandbox-report.txt;
  else echo "blocked $target" >> sandbox-report.txt; fi
done
if cat {Path(django_settings.BASE_DIR) / "pyproject.toml"} > /dev/null 2>&1; then
  echo "read the portal" >> sandbox-report.txt; fi
if echo "[filter \"x\"]" >> .git/config 2>/dev/null; then
  echo "changed git config" >> sandbox-report.txt; fi
"""
    return git_server.create_repo(
        unique("jupyter"),
        {
            "requirements.txt": "tabulate==0.9.0\n",
            "postBuild": post_build,
            "start": '#!/bin/bash\nexec "$@"\n',
            "analysis.ipynb": '{"cells": []}\n',
        },
        executable=["postBuild", "start"],
    )


@pytest.fixture(scope="module")
def jupyter_build(
    git_server: Any,
    jupyter_repo: Any,
    build_root: Path,
    shared_envs: Path,
    probes: dict[str, Path],
) -> Iterator[tuple[BuildResult, Log]]:
    """One build with the real base packages, shared by the tests that inspect it."""
    with override_settings(
        BINDERY_ENVS_DIR=shared_envs,
        BINDERY_CHECKOUTS_DIR=build_root / "checkouts",
        BINDERY_UV_OFFLINE=True,
        BINDERY_PACKAGE_INDEX="",
        BINDERY_SANDBOX="auto",
        BINDERY_ALLOWED_GIT_HOSTS=[git_server.host],
    ):
        built = build(resolved(git_server, jupyter_repo), base=None)
    yield built
    for probe in probes.values():
        probe.unlink(missing_ok=True)


# --- building what repo2docker builds --------------------------------------------------------


def test_requirements_txt_builds_a_jupyter_environment(jupyter_build):
    result, log = jupyter_build
    packages = dict(result.packages)
    assert packages["tabulate"] == "0.9.0"
    assert packages["jupyterhub"] == "6.1.1"
    assert packages["jupyterlab"] == "4.6.6"
    assert packages["ipykernel"] == "7.4.0"
    assert "pip" in packages
    assert "rfc3987-syntax" not in packages  # dropped: 1.7 s of import time per launch
    assert list(result.packages) == sorted(result.packages)
    env = Path(result.environment_path)
    assert (env / "bin" / "jupyterhub-singleuser").is_file()
    overrides = json.loads((env / "share/jupyter/lab/settings/overrides.json").read_text())
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}  # no news popup
    assert run_in_env(result, "import tabulate, jupyterlab; print('ok')") == "ok"
    assert list(env.glob("lib/python*/site-packages/tabulate*/__pycache__/*.pyc")) or list(
        env.glob("lib/python*/site-packages/__pycache__/tabulate*.pyc")
    ), "bytecode was not compiled"
    assert result.config_files == ("requirements.txt", "postBuild", "start")
    assert result.start_script == "start"
    assert result.python_version == default_interpreter().version
    assert not result.reused
    assert Path(result.checkout_path, "analysis.ipynb").is_file()
    assert Path(result.checkout_path).name == result_commit(result)
    assert {"fetch", "plan", "venv", "install", "postbuild", "total"} <= set(result.durations)
    phases = [phase for phase, _, _ in log.lines]
    assert phases[0] == "fetching" and phases[-1] == "built"
    assert phases.index("building") > phases.index("fetching")
    assert any(line.startswith(" + tabulate==0.9.0") for line in log.text.splitlines())
    assert LocalBuilder().environment_exists(result)


def internal_values(result: BuildResult) -> tuple[str, ...]:
    """What a build log must not show: host paths, the environment's key."""
    interpreter = default_interpreter()
    return (
        "/root", str(django_settings.VAR_DIR), str(django_settings.BINDERY_BUILD_DIR),
        str(django_settings.BINDERY_CHECKOUTS_DIR), result.environment_key,
        result.environment_path, result.checkout_path, interpreter.path, interpreter.prefix,
    )  # fmt: skip


def test_the_build_log_shows_package_progress_and_no_host_path_or_key(jupyter_build):
    result, log = jupyter_build
    lines = [line for _, _, line in log.lines]
    # up to postBuild, and the last line: what postBuild prints is the repository's own
    # (this one prints its python's path, and the paths it probes)
    starts = ("Running postBuild", "Warning: postBuild ran without")
    postbuild = next(i for i, line in enumerate(lines) if line.startswith(starts))
    said = lines[:postbuild] + lines[-1:]
    text = "\n".join(said)
    interpreter = default_interpreter()
    for value in internal_values(result):
        assert value not in text, value
    assert f"Python {interpreter.version}" in said
    assert not [line for line in said if " at: " in line]  # uv's "… environment at: <path>"

    # uv's own counts, from its real output: everything resolved is installed, and the one
    # package left out (rfc3987-syntax, uv's --excludes) is neither resolved nor installed
    def first(what: str) -> tuple[int, int]:
        """(line number, count) of the first line saying ``what`` N … in <duration>."""
        pattern = re.compile(rf"{what} ([\d,]+) \w+ in (\d+ min )?\d+(\.\d)? m?s$")
        found = [(i, m[1]) for i, line in enumerate(said) if (m := pattern.match(line))]
        assert found, f"no {what} line"
        return found[0][0], int(found[0][1].replace(",", ""))

    resolved_at, resolved_count = first("Resolved")
    installed_at, installed_count = first("Installed")
    compiled_at, compiled_count = first("Compiled bytecode:")
    assert resolved_count == installed_count == len(result.packages)
    said_out = next(i for i, line in enumerate(said) if line.startswith("Leaving out "))
    assert said[said_out].startswith("Leaving out rfc3987-syntax: ")
    assert not [line for line in said[said_out + 1 :] if "rfc3987" in line]  # not installed
    # jupyterlab's, jupyterhub's, ipykernel's and theirs: linked from the shared base's
    # (builder/shared_base.py) or compiled here
    shared = re.search(r"shared with other environments: ([\d,]+) files", text)
    linked = int(shared[1].replace(",", "")) if shared else 0
    assert compiled_count + linked > 1000
    assert resolved_at < installed_at < compiled_at
    # the last line: how long the build took, and its steps
    phase, _, last = log.lines[-1]
    assert phase == "built" and re.match(r"Built in .+ s \(.*installing packages \d", last)


def test_the_environment_key_and_interpreter_are_kept_for_support_not_in_the_log(
    git_host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    repo = git_host.create_repo(unique("support"), {"requirements.txt": "tabulate==0.9.0\n"})
    with caplog.at_level(logging.INFO, logger="apps.builds.backends.local.builder"):
        result, log = build(resolved(git_host, repo))
    interpreter = default_interpreter()
    for value in internal_values(result):
        assert value not in log.text, value
    # the operators' log has both, for a build that fails before it has a receipt
    operators = "\n".join(record.getMessage() for record in caplog.records)
    assert result.environment_key in operators and interpreter.path in operators
    # the environment's record and the build's receipt keep them once it is built
    record = store.env_record(result.environment_key)
    assert record is not None
    assert (record["key"], record["python"]) == (result.environment_key, interpreter.path)
    receipt = receipt_for(Build(result=result_to_json(result)))
    assert receipt is not None and receipt["environment_key"] == result.environment_key


def result_commit(result: BuildResult) -> str:
    record = store.read_json(store.checkout_record_path(Path(result.checkout_path)))
    assert record is not None
    return str(record["commit"])


def test_postbuild_runs_in_the_checkout_with_the_environment_active(jupyter_build, probes):
    result, log = jupyter_build
    env = Path(result.environment_path)
    assert f"postBuild runs with {env}/bin/python" in log.text
    assert Path(result.checkout_path, "data", "generated.txt").read_text() == "generated\n"
    assert (env / "share" / "postbuild-marker.txt").read_text() == "from postBuild\n"
    report = Path(result.checkout_path, "sandbox-report.txt").read_text()
    if sandbox_mode() == "bwrap":
        # Beside the builds is the sandbox's private /tmp (the write lands there and is
        # gone); the uv cache is not in the sandbox at all.
        assert f"blocked {probes['in_the_uv_cache']}" in report
        assert "read the portal" not in report
        assert "changed git config" not in report  # git later runs on the host
        assert not probes["beside_the_builds"].exists()
        assert not probes["in_the_uv_cache"].exists()
        assert "in a bubblewrap sandbox" in log.text
    else:  # no bubblewrap on this machine: the build says so
        assert any("ran without a sandbox" in w for w in result.warnings)


def test_second_commit_with_unchanged_dependencies_reuses_the_environment(
    git_server, jupyter_repo, jupyter_build
):
    first, _ = jupyter_build
    env = Path(first.environment_path)
    record = store.env_record_path(first.environment_key)
    before = (env.stat().st_ino, env.stat().st_mtime_ns, record.read_bytes())
    sha = git_server.commit(jupyter_repo, {"analysis.ipynb": '{"cells": [1]}\n'})

    second, log = build(resolved(git_server, jupyter_repo, sha), base=None)

    assert second.reused
    assert second.environment_key == first.environment_key
    assert second.environment_path == first.environment_path
    assert (env.stat().st_ino, env.stat().st_mtime_ns, record.read_bytes()) == before
    assert not any(line.startswith(UV_LINES) for line in log.text.splitlines())
    assert "install" not in second.durations and "venv" not in second.durations
    assert "postBuild runs with" not in log.text
    assert second.packages == first.packages
    assert second.checkout_path != first.checkout_path
    assert Path(second.checkout_path, "analysis.ipynb").read_text() == '{"cells": [1]}\n'
    # postBuild's output in the checkout comes along with the reused environment
    assert Path(second.checkout_path, "data", "generated.txt").read_text() == "generated\n"
    assert log.lines[-1][0] == "built"


def test_same_commit_again_reuses_its_checkout_without_fetching(
    git_server, jupyter_repo, jupyter_build
):
    first, _ = jupyter_build
    served = len(git_server.requests)
    again, log = build(resolved(git_server, jupyter_repo, result_commit(first)), base=None)
    assert again.reused
    assert again.checkout_path == first.checkout_path
    assert len(git_server.requests) == served  # nothing fetched
    assert not any(line.startswith(UV_LINES) for line in log.text.splitlines())


def test_binder_dir_beats_root_files(git_host):
    repo = git_host.create_repo(
        unique("binder-dir"),
        {
            "Dockerfile": "FROM ubuntu\n",
            "requirements.txt": "no-such-package-anywhere==1.0\n",
            "setup.py": "raise SystemExit('root setup.py must be ignored')\n",
            "binder/requirements.txt": "tabulate==0.9.0\n",
        },
    )
    result, _ = build(resolved(git_host, repo))
    assert result.config_files == ("binder/requirements.txt",)
    assert dict(result.packages) == {"tabulate": "0.9.0", "toolz": "1.0.0"}


def test_setup_py_installs_the_repository_as_a_package(git_host):
    repo = git_host.create_repo(
        unique("setup-py"),
        {
            "setup.py": "from setuptools import setup\n"
            "setup(name='hello-bindery', version='0.1', py_modules=['hello_bindery'],"
            " install_requires=['tabulate==0.9.0'])\n",
            "hello_bindery.py": "GREETING = 'hello from setup.py'\n",
        },
    )
    result, _ = build(resolved(git_host, repo))
    packages = dict(result.packages)
    assert packages["hello-bindery"] == "0.1"
    assert packages["tabulate"] == "0.9.0"
    assert result.config_files == ("setup.py",)
    # a regular install, not an editable link into the build's checkout
    assert run_in_env(result, "import hello_bindery; print(hello_bindery.__file__)").startswith(
        result.environment_path
    )


def test_pyproject_toml_installs_the_repository_as_a_package(git_host):
    repo = git_host.create_repo(
        unique("pyproject"),
        {
            "pyproject.toml": "[build-system]\nrequires = ['hatchling']\n"
            "build-backend = 'hatchling.build'\n[project]\nname = 'hatched-bindery'\n"
            "version = '0.2'\ndependencies = ['tabulate==0.9.0']\n"
            "[tool.hatch.build.targets.wheel]\npackages = ['hatched_bindery']\n",
            "hatched_bindery/__init__.py": "NAME = 'hatched'\n",
        },
    )
    result, _ = build(resolved(git_host, repo))
    assert dict(result.packages)["hatched-bindery"] == "0.2"
    assert run_in_env(result, "import hatched_bindery; print(hatched_bindery.NAME)") == "hatched"


def test_pipfile_lock_is_used_over_pipfile(git_host):
    lock = {
        "_meta": {"requires": {"python_version": default_interpreter().version[:4]}},
        "default": {"tabulate": {"version": "==0.9.0"}},
        "develop": {"toolz": {"version": "==1.0.0"}},
    }
    repo = git_host.create_repo(
        unique("pipfile"),
        {
            "Pipfile": "[packages]\nno-such-package-anywhere = '*'\n",
            "Pipfile.lock": json.dumps(lock),
        },
    )
    result, log = build(resolved(git_host, repo))
    assert result.config_files == ("Pipfile.lock",)
    assert dict(result.packages) == {"tabulate": "0.9.0", "toolz": "1.0.0"}
    # toolz is the repository's own (dev) requirement, so the base pin is not added
    assert "Base package toolz==1.0.0: the repository's own requirement is used" in log.text


@pytest.mark.parametrize("asks", [False, True], ids=["left-out", "asked-for"])
def test_rfc3987_syntax_is_left_out_unless_the_repository_asks_for_it(git_host, asks):
    # jsonschema[format-nongpl] (as jupyter-events asks) depends on it; a repository naming
    # it itself gets it
    wanted = "jsonschema[format-nongpl]==4.26.0\n" + ("rfc3987-syntax\n" if asks else "")
    repo = git_host.create_repo(unique("rfc3987"), {"requirements.txt": wanted})
    result, log = build(resolved(git_host, repo))
    packages = dict(result.packages)
    assert "jsonschema" in packages
    assert ("rfc3987-syntax" in packages) is asks
    assert ("Leaving out rfc3987-syntax: " in log.text) is not asks
    found = run_in_env(
        result, "import importlib.util as u; print(bool(u.find_spec('rfc3987_syntax')))"
    )
    assert found == str(asks)


def test_environment_yml_installs_pip_section_and_pypi_conda_packages(git_host):
    repo = git_host.create_repo(
        unique("conda"),
        {
            "environment.yml": "name: analysis\nchannels: [conda-forge]\ndependencies:\n"
            f"  - python={default_interpreter().version[:4]}\n  - pip\n  - tabulate=0.9\n"
            "  - r-base=4.3\n  - bindery-conda-only-library\n"
            "  - pip:\n    - toolz==1.0.0\n",
            "requirements.txt": "no-such-package-anywhere\n",
        },
    )
    result, log = build(resolved(git_host, repo), base=())
    assert dict(result.packages) == {"tabulate": "0.9.0", "toolz": "1.0.0"}
    skipped = next(w for w in result.warnings if "skipped conda packages" in w)
    assert "r-base==4.3.*" in skipped and "bindery-conda-only-library" in skipped
    assert "tabulate" not in skipped
    assert any("requirements.txt is ignored" in w for w in result.warnings)
    assert ("building", "stderr", f"Warning: {skipped}") in log.lines


def test_runtime_txt_for_a_missing_python_falls_back_with_a_warning(git_host):
    repo = git_host.create_repo(
        unique("old-runtime"),
        {"runtime.txt": "python-3.5\n", "requirements.txt": "tabulate==0.9.0\n"},
    )
    result, log = build(resolved(git_host, repo))
    default = default_interpreter().version
    assert result.python_version == default
    warning = next(w for w in result.warnings if "Python 3.5" in w)
    assert "runtime.txt" in warning and f"using Python {default} instead" in warning
    assert f"Warning: {warning}" in log.text


def test_runtime_txt_is_honoured_when_that_python_is_installed(git_host):
    default = default_interpreter()
    others = [v for v in ("3.12", "3.13", "3.10") if v != default.minor]
    installed = next((v for v in others if find_interpreter(v) is not None), None)
    wanted = installed or others[0]
    repo = git_host.create_repo(
        unique("runtime"),
        {"runtime.txt": f"python-{wanted}\n", "requirements.txt": "tabulate==0.9.0\n"},
    )
    result, _ = build(resolved(git_host, repo))
    if installed:
        assert result.python_version.startswith(installed + ".")
        assert run_in_env(result, "import sys; print(sys.version_info[:2])") == str(
            tuple(int(p) for p in installed.split("."))
        )
        assert not result.warnings
    else:  # no other Python on this machine: the fallback, said out loud
        assert result.python_version == default.version
        assert any("not installed on this machine" in w for w in result.warnings)


# --- refusals -----------------------------------------------------------------------------


def test_python_2_is_refused(git_host, build_root):
    repo = git_host.create_repo(
        unique("py2"), {"runtime.txt": "python-2.7\n", "requirements.txt": "numpy\n"}
    )
    before = set(environment_dirs())
    error, _ = refused(resolved(git_host, repo))
    assert error.code == "PYTHON2_UNSUPPORTED"
    assert error.permanent
    assert "Python 2 is not supported" in error.message
    assert set(environment_dirs()) == before
    assert not list((build_root / "checkouts").glob(f"{repo.name}*/.tmp-*"))


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"Dockerfile": "FROM ubuntu\n", "requirements.txt": "toolz\n"}, "Dockerfile"),
        ({"binder/apt.txt": "graphviz\n", "binder/requirements.txt": "toolz\n"}, "binder/apt.txt"),
        ({"install.R": "install.packages('ggplot2')\n"}, "install.R"),
    ],
)
def test_configuration_needing_kubernetes_is_refused(git_host, files, named):
    repo = git_host.create_repo(unique("k8s"), files)
    before = set(environment_dirs())
    error, log = refused(resolved(git_host, repo))
    assert error.code == "NEEDS_KUBERNETES"
    assert error.permanent
    assert error.message.startswith(f"{named} asks for")
    assert "needs the Kubernetes backend" in error.message
    assert set(environment_dirs()) == before
    assert not any(line.startswith(UV_LINES) for line in log.text.splitlines())


# --- keys ---------------------------------------------------------------------------------


def test_key_follows_dependency_files_not_notebooks(tmp_path):
    def key(files: dict[str, str], base: tuple[str, ...] = SMALL_BASE) -> str:
        root = tmp_path / uuid.uuid4().hex
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(content)
        plan = read_plan(root)
        return LocalBuilder(base_requirements=base).environment_key(
            plan, root, default_interpreter()
        )

    files = {"requirements.txt": "tabulate\n", "postBuild": "echo hi\n", "a.ipynb": "{}"}
    same = key(files)
    assert key({**files, "a.ipynb": '{"cells": []}', "README.md": "new"}) == same
    assert key({**files, "requirements.txt": "tabulate==0.9.0\n"}) != same
    assert key({**files, "postBuild": "echo bye\n"}) != same
    assert key({**files, "runtime.txt": "python-3.5\n"}) != same
    assert key(files, base=("toolz==0.12.0",)) != same
    package = {"setup.py": "from setuptools import setup; setup()\n", "mod.py": "x = 1\n"}
    assert key({**package, "a.ipynb": "{}"}) == key({**package, "a.ipynb": "[]"})
    assert key({**package, "mod.py": "x = 2\n"}) != key(package)  # its code is installed


# --- concurrency, cancel, timeout, crashes --------------------------------------------------


def test_two_simultaneous_builds_of_one_key_make_one_environment(
    git_host: Any, settings: Any, tmp_path: Path
) -> None:
    use_fresh_dirs(settings, tmp_path)
    gate = Gate()
    files = {"requirements.txt": "tabulate==0.9.0\n", "postBuild": "#!/bin/sh\n" + gate.script}
    repo = git_host.create_repo(unique("together"), files, executable=["postBuild"])
    first_sha = repo.head
    second_sha = git_host.commit(repo, {"notes.md": "a notebook-only change\n"})
    results: dict[str, BuildResult] = {}
    logs = {"first": Log(gate.feed), "second": Log(gate.feed)}
    waiting = logs["second"].watch("Waiting for another build of the same environment")

    def run(name: str, sha: str) -> None:
        results[name] = LocalBuilder(base_requirements=SMALL_BASE).build(
            BuildRequest(build_id=1, repo=resolved(git_host, repo, sha)), logs[name]
        )

    try:
        first = threading.Thread(target=run, args=("first", first_sha))
        first.start()
        gate.wait_arrival()  # the first build is in postBuild, holding the key
        second = threading.Thread(target=run, args=("second", second_sha))
        second.start()
        assert waiting.wait(120), "the second build did not wait for the first"
        gate.open()
        first.join(120)
        second.join(120)
    finally:
        gate.close()

    assert set(results) == {"first", "second"}
    assert not results["first"].reused and results["second"].reused
    assert results["first"].environment_key == results["second"].environment_key
    assert len(environment_dirs()) == 1
    assert len(gate.connections) == 1  # postBuild ran once
    installs = sum(log.count("Installed ") for log in logs.values())
    assert installs == 1
    assert results["first"].checkout_path != results["second"].checkout_path


def test_cancel_kills_the_build_and_leaves_nothing_ready(
    git_host: Any, settings: Any, tmp_path: Path
) -> None:
    use_fresh_dirs(settings, tmp_path)
    gate = Gate()
    files = {"requirements.txt": "tabulate==0.9.0\n", "postBuild": "#!/bin/sh\n" + gate.script}
    repo = git_host.create_repo(unique("cancel"), files, executable=["postBuild"])
    request = BuildRequest(build_id=1, repo=resolved(git_host, repo))
    failure: list[BackendError] = []

    def run() -> None:
        try:
            LocalBuilder(base_requirements=SMALL_BASE).build(request, Log(gate.feed))
        except BackendError as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        conn = gate.wait_arrival()
        pastas = pastas_of(os.getpid())  # postBuild's network, started by the build's thread
        assert len(pastas) == (1 if builds_isolated() else 0)
        request.cancel.set()
        worker.join(60)
        assert Gate.closed_by_peer(conn), "postBuild is still running"
    finally:
        gate.close()
    assert all(exits(pasta) for pasta in pastas), "pasta outlived the cancelled build"
    assert [e.code for e in failure] == ["BUILD_CANCELLED"]
    assert environment_dirs() == []
    assert not list(Path(settings.BINDERY_ENVS_DIR).glob("*.json"))
    assert not list(Path(settings.BINDERY_CHECKOUTS_DIR).glob("*/*"))
    (key_lock,) = Path(settings.BINDERY_ENVS_DIR).glob("*.lock")
    fd = store.try_flock(key_lock)  # the key is not left locked
    assert fd is not None
    os.close(fd)


def test_timeout_kills_the_build(git_host: Any, settings: Any, tmp_path: Path) -> None:
    use_fresh_dirs(settings, tmp_path)
    gate = Gate()
    files = {"requirements.txt": "tabulate==0.9.0\n", "postBuild": "#!/bin/sh\n" + gate.script}
    repo = git_host.create_repo(unique("timeout"), files, executable=["postBuild"])
    pastas: list[int] = []

    def at_the_gate(line: str) -> None:  # postBuild's pasta, started by this thread
        if "gate waiting at" in line:
            pastas.extend(pastas_of(os.getpid()))

    log = Log(gate.feed, at_the_gate)
    try:
        with pytest.raises(BackendError) as info:
            build(resolved(git_host, repo), timeout=5, log=log)
        assert gate.arrived.is_set(), "the build timed out before postBuild"
        assert Gate.closed_by_peer(gate.connections[0]), "postBuild is still running"
    finally:
        gate.close()
    assert len(pastas) == (1 if builds_isolated() else 0)
    assert all(exits(pasta) for pasta in pastas), "pasta outlived the timed-out build"
    assert info.value.code == "BUILD_TIMEOUT"
    assert "longer than 5 s" in info.value.message
    assert environment_dirs() == []


def test_half_built_environment_of_a_killed_build_is_never_used(git_host, settings, tmp_path):
    use_fresh_dirs(settings, tmp_path)
    gate = Gate()
    files = {"requirements.txt": "tabulate==0.9.0\n", "postBuild": "#!/bin/sh\n" + gate.script}
    repo = git_host.create_repo(unique("killed"), files, executable=["postBuild"])
    target = resolved(git_host, repo)
    code = (
        "import json, sys, django; django.setup()\n"
        "from apps.builds.backends.base import BuildRequest\n"
        "from apps.builds.backends.local import LocalBuilder\n"
        "from apps.repos.types import ResolvedRepo\n"
        "repo = ResolvedRepo(**json.loads(sys.argv[1]))\n"
        "LocalBuilder(base_requirements=json.loads(sys.argv[2])).build(\n"
        "    BuildRequest(build_id=1, repo=repo), lambda line, **k: print(line, flush=True))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "BINDERY_ENVS_DIR": str(settings.BINDERY_ENVS_DIR),
        "BINDERY_CHECKOUTS_DIR": str(settings.BINDERY_CHECKOUTS_DIR),
        "BINDERY_UV_CACHE_DIR": str(settings.BINDERY_UV_CACHE_DIR),
        "BINDERY_UV_OFFLINE": "true",
        "BINDERY_ALLOWED_GIT_HOSTS": git_host.host,
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(asdict(target)), json.dumps(SMALL_BASE)],
        env=env,
        cwd=django_settings.BASE_DIR,
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    worker_log = Log(gate.feed)
    reader = threading.Thread(target=lambda: [worker_log(line) for line in worker.stdout or ()])
    reader.start()
    try:
        conn = gate.wait_arrival()  # the worker is in postBuild
        # (as the worker's own settings decided)
        isolated = "Build commands get a network of their own" in worker_log.text
        pastas = pastas_of(worker.pid)
        assert len(pastas) == (1 if isolated else 0)
        # postBuild's sandbox, and the one holding the build's network namespace
        sandboxes = children_of(worker.pid, "bwrap")
        assert len(sandboxes) == (2 if isolated else 1)
        os.killpg(worker.pid, signal.SIGKILL)  # as the OOM killer would
        worker.wait()
        reader.join(60)
        # they die with the worker (PR_SET_PDEATHSIG), though nobody stopped them
        assert all(exits(pasta) for pasta in pastas), "pasta outlived its build's worker"
        assert all(exits(pid) for pid in sandboxes), "a sandbox outlived its build's worker"
        (half_built,) = environment_dirs()
        assert (half_built / "pyvenv.cfg").is_file()
        assert store.env_record(half_built.name) is None  # never ready
        gate.open()  # let the orphaned postBuild finish and exit
        assert Gate.closed_by_peer(conn)

        result, log = build(target, log=Log(gate.feed))
    finally:
        gate.close()
    assert not result.reused
    assert result.environment_key == half_built.name
    assert "Removing an unfinished environment left by an interrupted build" in log.text
    assert "gate go" in log.text
    assert LocalBuilder().environment_exists(result)


# --- disk -------------------------------------------------------------------------------------


def test_prune_removes_least_recently_used_and_never_kept_keys(git_host, settings, tmp_path):
    use_fresh_dirs(settings, tmp_path)
    built = {}
    for name, requirement in (("old", "tabulate==0.9.0"), ("mid", "toolz==1.0.0"), ("new", "")):
        repo = git_host.create_repo(unique(name), {"requirements.txt": requirement + "\n"})
        built[name], _ = build(resolved(git_host, repo), base=() if name != "new" else SMALL_BASE)
    for age, name in enumerate(("old", "mid", "new")):  # explicit last-use times, oldest first
        when = 1_700_000_000 + age * 3600
        os.utime(store.env_record_path(built[name].environment_key), (when, when))
        os.utime(store.checkout_record_path(Path(built[name].checkout_path)), (when, when))
    unfinished = Path(settings.BINDERY_ENVS_DIR) / ("0" * 32)
    unfinished.mkdir()
    (unfinished / "partial").write_bytes(b"x" * 10000)

    report = disk.disk_usage()
    assert report.entries[0].kind == "unfinished"
    keys = [e.key for e in report.entries if e.kind == "environment"]
    assert keys == [built[n].environment_key for n in ("old", "mid", "new")]
    assert all(e.bytes > 0 for e in report.entries)
    keep = {built["old"].environment_key}

    preview = disk.prune(0, keep, dry_run=True)
    assert {e.key for e in preview.removed if e.kind == "environment"} == {
        built["mid"].environment_key,
        built["new"].environment_key,
    }
    assert unfinished.exists()
    assert disk.disk_usage().total_bytes == report.total_bytes  # dry run: nothing removed

    size = {e.key: 0 for e in report.entries}
    for entry in report.entries:
        size[entry.key] += entry.bytes
    freed = size.get("", 0) + size["0" * 32] + size[built["mid"].environment_key]
    budget = report.total_bytes - freed
    pruned = disk.prune(budget, keep)
    assert pruned.under_budget
    removed = [(e.kind, e.key) for e in pruned.removed]
    assert ("unfinished", "0" * 32) in removed
    assert ("environment", built["mid"].environment_key) in removed
    assert ("checkout", built["mid"].environment_key) in removed
    assert not unfinished.exists()
    builder = LocalBuilder()
    assert not builder.environment_exists(built["mid"])
    assert builder.environment_exists(built["old"])  # least recently used, but kept
    assert builder.environment_exists(built["new"])

    everything = disk.prune(0, keep)
    assert [e.key for e in everything.removed if e.kind == "environment"] == [
        built["new"].environment_key
    ]
    assert builder.environment_exists(built["old"])
    assert everything.kept_in_use == (built["old"].environment_key,)
    assert not everything.under_budget


def test_parse_size():
    assert disk.parse_size("20G") == 20 * 1024**3
    assert disk.parse_size("500M") == 500 * 1024**2
    assert disk.parse_size("1024") == 1024
    with pytest.raises(ValueError):
        disk.parse_size("lots")
