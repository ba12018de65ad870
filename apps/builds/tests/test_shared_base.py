"""The shared, precompiled base (``local/shared_base``): real builds with the real base set,
offline from the shared uv cache (bin/warm-test-cache fills it), into environments beside the
cache as the portal keeps them, with a bases directory of this module's own (made by the
first build, removed at the end).

What must hold: the first build makes the base and every build links its bytecode (the same
inode as the base's pyc) where the environment's source file is the base's; a repository
pinning another version of a base package gets its pin and bytecode of its own; a
postBuild (the build's uid) can change neither a linked pyc nor the base's; builds without
a base still compile everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from apps.builds.backends import sandboxing, store
from apps.builds.backends.base import BuildResult
from apps.builds.backends.local import ownership, shared_base
from apps.builds.backends.local.interpreters import default_interpreter
from apps.builds.backends.local.steps import sandbox_mode
from apps.builds.tests.helpers import Log, build, envs_beside_the_cache, resolved, unique
from apps.testing import require

pytestmark = pytest.mark.build

PREPARING = "Preparing the Jupyter packages for Python"
SHARED = "Bytecode of the Jupyter packages shared with other environments"
SERVERAPP = "jupyter_server/serverapp.py"


# --- helpers --------------------------------------------------------------------------------


def site(root: Path | str) -> Path:
    found = sorted(Path(root).glob("lib/python*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def pyc(source: Path) -> Path:
    tag = shared_base.cache_tag(default_interpreter())
    return source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"


def base_of(result: BuildResult) -> Path:
    record = store.env_record(result.environment_key)
    assert record is not None and record["shared_base"], record
    base = shared_base.bases_dir() / record["shared_base"]
    assert (base / "pyvenv.cfg").is_file()
    return base


def python_v(result: BuildResult, code: str) -> tuple[str, list[str]]:
    """(stdout, the modules' sources compiled while running ``code``), as a server starts:
    without writing bytecode."""
    done = subprocess.run(
        [str(Path(result.environment_path) / "bin" / "python"), "-v", "-c", code],
        capture_output=True, text=True, check=True, cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    # importlib says "# code object from '<pyc>'" for a valid pyc, "… from <source>" else
    compiled = [
        line.removeprefix("# code object from ")
        for line in done.stderr.splitlines()
        if line.startswith("# code object from ") and line.endswith(".py")
    ]
    return done.stdout.strip(), compiled


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """This module's environments and bases beside the uv cache, checkouts elsewhere."""
    with envs_beside_the_cache() as envs:
        bases = envs.parent / unique("test-bases")
        try:
            yield {"envs": envs, "bases": bases,
                   "checkouts": tmp_path_factory.mktemp("base-checkouts")}  # fmt: skip
        finally:
            shutil.rmtree(bases, ignore_errors=True)


def _settings(dirs: dict[str, Path], git_server: Any) -> dict[str, Any]:
    return {
        "BINDERY_ENVS_DIR": dirs["envs"], "BINDERY_BASES_DIR": dirs["bases"],
        "BINDERY_CHECKOUTS_DIR": dirs["checkouts"], "BINDERY_UV_OFFLINE": True,
        "BINDERY_PACKAGE_INDEX": "", "BINDERY_SANDBOX": "auto",
        "BINDERY_ALLOWED_GIT_HOSTS": [git_server.host], "BINDERY_SHARED_BASE": True,
    }  # fmt: skip


@pytest.fixture(autouse=True)
def _builder_settings(settings: Any, dirs: dict[str, Path], git_server: Any) -> None:
    for name, value in _settings(dirs, git_server).items():
        setattr(settings, name, value)


@pytest.fixture(scope="module")
def first_build(git_server: Any, dirs: dict[str, Path]) -> tuple[BuildResult, Log]:
    """The module's first build with the real base set: no base exists yet."""
    repo = git_server.create_repo(unique("first"), {"requirements.txt": "tabulate==0.9.0\n"})
    with override_settings(**_settings(dirs, git_server)):
        assert not list(dirs["bases"].glob("*.json"))  # no base yet
        return build(resolved(git_server, repo), base=None)


def sandboxed() -> bool:
    try:
        return sandbox_mode() == "bwrap"
    except Exception:
        return False


# --- the base and its bytecode ----------------------------------------------------------------


def test_the_first_build_makes_the_base_and_works(first_build: tuple[BuildResult, Log]) -> None:
    result, log = first_build
    assert PREPARING in log.text
    assert dict(result.packages)["tabulate"] == "0.9.0"
    assert dict(result.packages)["jupyterhub"] == "6.1.1"
    base = base_of(result)
    record = store.read_json(base.with_name(f"{base.name}.json"))
    assert record is not None and record["python_version"] == default_interpreter().version
    assert "base" in result.durations
    # the base is the portal's, read-only to builds: root's directories, files nobody
    # else may write, none of it the build's uid's
    build_uids = range(sandboxing.ids().build(0), sandboxing.ids().build(sandboxing.BUILD_SLOTS))
    for path in [base, *base.rglob("*")]:
        st = path.lstat()
        assert st.st_uid not in build_uids, path
        if sandboxed() and not stat.S_ISLNK(st.st_mode):
            assert not st.st_mode & 0o022, path
    # the build's log names no host path of the base
    assert str(base.parent) not in log.text


def test_a_build_links_the_bases_bytecode_and_imports_without_compiling(
    first_build: tuple[BuildResult, Log],
) -> None:
    result, log = first_build
    env, base = Path(result.environment_path), base_of(result)
    assert SHARED in log.text
    record = store.env_record(result.environment_key)
    assert record is not None and record["bytecode_linked"] > 1000
    ours, theirs = site(env) / SERVERAPP, site(base) / SERVERAPP
    assert ours.stat().st_ino == theirs.stat().st_ino  # uv hardlinked both from its cache
    assert pyc(ours).stat().st_ino == pyc(theirs).stat().st_ino  # the base's pyc, linked
    st = pyc(ours).stat()
    if sandboxed():
        assert st.st_uid == sandboxing.ids().cache and not st.st_mode & 0o022
    # a server start compiles nothing of the server, and its code names the environment
    out, compiled = python_v(
        result,
        "import jupyter_server.serverapp as m; print(m.ServerApp.start.__code__.co_filename)",
    )
    assert out == str(ours)
    assert not [path for path in compiled if "site-packages" in path], compiled[:5]
    # the repository's own package is not in the base: compiled for this environment alone
    tabulate = next(site(env).glob("tabulate/__init__.py"))
    assert pyc(tabulate).stat().st_nlink == 1


def test_later_builds_use_the_base_and_compile_only_their_own_packages(
    first_build: tuple[BuildResult, Log], git_host: Any
) -> None:
    repo = git_host.create_repo(unique("second"), {"requirements.txt": "toolz==1.0.0\n"})
    result, log = build(resolved(git_host, repo), base=None)
    assert PREPARING not in log.text and "base" not in result.durations
    assert base_of(result) == base_of(first_build[0])
    compiled = [line for line in log.text.splitlines() if line.startswith("Compiled bytecode:")]
    assert len(compiled) == 1
    count = int(compiled[0].split()[2].replace(",", ""))
    assert 0 < count < 200, compiled  # toolz's and the few the base does not share
    _, compiled_at_start = python_v(result, "import jupyter_server.serverapp, toolz")
    assert not [path for path in compiled_at_start if "site-packages" in path]


def test_a_pinned_version_of_a_base_package_gets_its_pin_and_its_own_bytecode(
    first_build: tuple[BuildResult, Log], git_host: Any
) -> None:
    # ipykernel 7.3.0 is the 3.10 base set's: the warm test cache has it beside 7.4.0
    repo = git_host.create_repo(unique("pinned"), {"requirements.txt": "ipykernel==7.3.0\n"})
    result, log = build(resolved(git_host, repo), base=None)
    assert dict(result.packages)["ipykernel"] == "7.3.0"
    assert "Base package ipykernel==7.4.0: the repository's own requirement is used" in log.text
    env, base = Path(result.environment_path), base_of(result)
    ours, theirs = site(env) / "ipykernel/kernelapp.py", site(base) / "ipykernel/kernelapp.py"
    assert ours.stat().st_ino != theirs.stat().st_ino
    assert pyc(ours).is_file() and pyc(ours).stat().st_ino != pyc(theirs).stat().st_ino
    assert pyc(ours).stat().st_nlink == 1  # compiled for this environment, linked nowhere
    out, compiled = python_v(
        result, "import ipykernel.kernelapp, ipykernel; print(ipykernel.__version__)"
    )
    assert out == "7.3.0"
    assert not [path for path in compiled if "site-packages" in path], compiled[:5]
    # what it shares with the base is still linked
    server = site(env) / SERVERAPP
    assert pyc(server).stat().st_ino == pyc(site(base) / SERVERAPP).stat().st_ino


ATTACK = r"""
import errno, json, os, sys

def attempt(call):
    try:
        call()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def write(path):
    with open(path, "r+b") as handle:
        handle.write(b"poisoned")

def append(path):
    with open(path, "ab") as handle:
        handle.write(b"poisoned")

report = {}
for name, path in (("linked", sys.argv[1]), ("base", sys.argv[2])):
    seen = {}
    try:
        st = os.stat(path)
        seen["control"] = {"ino": st.st_ino, "uid": st.st_uid, "mode": st.st_mode}
    except OSError as exc:
        seen["control"] = errno.errorcode.get(exc.errno, str(exc.errno))
    seen["uid"] = os.getuid()
    seen["write"] = attempt(lambda: write(path))
    seen["append"] = attempt(lambda: append(path))
    seen["truncate"] = attempt(lambda: os.truncate(path, 0))
    seen["chmod"] = attempt(lambda: os.chmod(path, 0o666))
    seen["utime"] = attempt(lambda: os.utime(path, (0, 0)))
    report[name] = seen
with open("attack-report.json", "w") as handle:
    json.dump(report, handle)
"""


def test_postbuild_cannot_change_a_linked_pyc_nor_the_bases(
    first_build: tuple[BuildResult, Log], git_host: Any
) -> None:
    require(sandboxed(), "bubblewrap, setpriv and root are needed for the build sandbox")
    base = base_of(first_build[0])
    target = pyc(site(base) / SERVERAPP)
    before = (digest(target), target.stat())
    relative = target.relative_to(base)
    linked = f'"$VIRTUAL_ENV/{relative}"'
    post_build = (
        "#!/bin/sh\nset -e\n"
        f'python attack.py {linked} "{target}"\n'
        # the shell's own tries, for the record
        f'( echo x > {linked} ) 2>/dev/null && echo "shell wrote" >> shell.txt\n'
        f'truncate -s 0 {linked} 2>/dev/null && echo "shell truncated" >> shell.txt\n'
        f'chmod 666 {linked} 2>/dev/null && echo "shell chmod" >> shell.txt\n'
        "true\n"
    )
    repo = git_host.create_repo(
        unique("attack"),
        {"requirements.txt": "tabulate==0.9.0\n#attack\n", "attack.py": ATTACK,
         "postBuild": post_build},
        executable=["postBuild"],
    )  # fmt: skip
    result, _ = build(resolved(git_host, repo), base=None)
    report = json.loads(Path(result.checkout_path, "attack-report.json").read_text())
    seen = report["linked"]
    # the control: postBuild, as the build's uid, saw the linked pyc, the base's own inode
    assert seen["uid"] != 0 and seen["uid"] != sandboxing.ids().cache
    assert seen["control"]["ino"] == before[1].st_ino, seen
    for way in ("write", "append", "truncate", "chmod", "utime"):
        assert seen[way] in ("EACCES", "EPERM"), (way, seen)
    # the base itself is not even in postBuild's view; were it, it would refuse the same way
    for way in ("write", "append", "truncate", "chmod", "utime"):
        assert report["base"][way] in ("ENOENT", "EACCES", "EPERM"), (way, report["base"])
    assert not Path(result.checkout_path, "shell.txt").exists()
    # nothing changed: the base's pyc, and the environment's link to it
    after = target.stat()
    assert digest(target) == before[0]
    assert (after.st_mode, after.st_uid, after.st_mtime) == (
        before[1].st_mode, before[1].st_uid, before[1].st_mtime,
    )  # fmt: skip
    env = Path(result.environment_path)
    assert (env / relative).stat().st_ino == after.st_ino


def test_without_the_sandbox_builds_link_the_base_too(
    first_build: tuple[BuildResult, Log], git_host: Any, settings: Any
) -> None:
    settings.BINDERY_SANDBOX = "off"
    # (a requirements file of its own: the environment key does not say "sandboxed")
    repo = git_host.create_repo(
        unique("unsandboxed"), {"requirements.txt": "toolz==1.0.0\n# no sandbox\n"}
    )
    result, log = build(resolved(git_host, repo), base=None)
    # a base of its own: one made without the sandbox (root-run builds could write it) is
    # never the sandboxed builds' (the sandbox mode is part of the base's name)
    assert SHARED in log.text and "base" in result.durations
    env, base = Path(result.environment_path), base_of(result)
    assert base != base_of(first_build[0])
    assert pyc(site(env) / SERVERAPP).stat().st_ino == pyc(site(base) / SERVERAPP).stat().st_ino
    toolz = site(env) / "toolz/__init__.py"
    assert pyc(toolz).is_file() and pyc(toolz).stat().st_nlink == 1


# --- without a base ---------------------------------------------------------------------------


def test_a_build_without_a_shared_base_compiles_everything_itself(
    git_host: Any, settings: Any, tmp_path: Path
) -> None:
    settings.BINDERY_SHARED_BASE = False
    settings.BINDERY_BASES_DIR = Path(django_settings.BINDERY_BUILD_DIR) / unique("no-bases")
    repo = git_host.create_repo(unique("alone"), {"requirements.txt": "tabulate==0.9.0\n"})
    result, log = build(resolved(git_host, repo))  # the small base set (toolz)
    assert PREPARING not in log.text and SHARED not in log.text
    assert not settings.BINDERY_BASES_DIR.exists()
    record = store.env_record(result.environment_key)
    assert record is not None and record["shared_base"] == "" and record["bytecode_linked"] == 0
    env = Path(result.environment_path)
    for source in (site(env) / "tabulate/__init__.py", site(env) / "toolz/__init__.py"):
        assert pyc(source).is_file() and pyc(source).stat().st_nlink == 1
    assert "Compiled bytecode:" in log.text


# --- the cache's owner, without walking all of it every build ------------------------------------


def test_root_entries_in_the_cache_are_given_to_its_owner_after_the_first_whole_walk(
    tmp_path: Path,
) -> None:
    require(os.geteuid() == 0, "changing owners needs root")
    cache, envs = tmp_path / "cache", tmp_path / "envs"
    (cache / "archive-v0" / "old" / "pkg").mkdir(parents=True)
    (cache / "archive-v0" / "old" / "pkg" / "m.py").write_text("")
    (cache / "simple-v28" / "pypi").mkdir(parents=True)
    owner = sandboxing.ids().cache

    def owners() -> set[int]:
        return {path.lstat().st_uid for path in [cache, *cache.rglob("*")]}

    assert ownership.own_cache(cache, envs)  # the first time: the whole walk
    assert owners() == {owner}
    assert stat.S_IMODE(envs.stat().st_mode) == 0o711
    # root adds to the cache (uv run as root, bin/warm-test-cache): an index entry, a wheel
    (cache / "simple-v28" / "pypi" / "new.rkyv").write_text("")
    (cache / "archive-v0" / "new" / "pkg").mkdir(parents=True)
    (cache / "archive-v0" / "new" / "pkg" / "m.py").write_text("")
    os.symlink("/etc/shadow", cache / "simple-v28" / "pypi" / "link")
    assert not ownership.own_cache(cache, envs)  # the quick pass
    assert owners() == {owner}
    assert Path("/etc/shadow").stat().st_uid == 0  # the link was not followed
    os.chmod(envs, 0o755)
    assert not ownership.own_cache(cache, envs)  # the quick pass sets it again
    assert stat.S_IMODE(envs.stat().st_mode) == 0o711
    fresh = tmp_path / "envs-2"  # a new environments directory (tests, the benchmark)
    assert not ownership.own_cache(cache, fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o711
    os.chmod(tmp_path, 0o700)
    assert ownership.own_cache(cache, envs)  # the whole walk again
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_handing_an_environment_over_gives_the_build_its_directories_only(
    tmp_path: Path,
) -> None:
    require(os.geteuid() == 0, "changing owners needs root")
    env, uid = tmp_path / "env", sandboxing.ids().build(0)
    (env / "lib" / "site" / "pkg").mkdir(parents=True)
    (env / "lib" / "site" / "pkg" / "m.py").write_text("")
    os.symlink("/etc", env / "lib" / "etc")
    os.symlink("/etc/passwd", env / "lib" / "passwd")
    ownership.hand_over(env, uid)
    for path in [env, *env.rglob("*")]:
        st = path.lstat()
        expected = uid if stat.S_ISDIR(st.st_mode) else 0
        assert (st.st_uid, st.st_gid) == (expected, expected), path
    assert Path("/etc").stat().st_uid == 0 and Path("/etc/passwd").stat().st_uid == 0
