"""Attacks on the build sandbox from a real ``setup.py`` and a real ``postBuild``.

Real builds of repositories on the loopback git server, offline from the shared uv cache.
The repository's ``probe.py`` runs twice — inside its own ``setup.py`` (uv builds the
repository's package as the build's uid) and from its ``postBuild`` — and tries what a
hostile repository would: keep root's capabilities, leave the sandbox's namespaces (a new
user namespace, ``umount``, a remount read-write), read the portal's secrets, the database
and ``/etc/shadow``, write into another environment, the shared uv cache and the ready
marker of an environment key it can predict. It records what it managed in its checkout.
Every target is shown to exist on the host first (the control), so a "no" means "refused",
not "not there". A second test plants symlinks for the root-run steps after postBuild (the
seal, the receipt's package list, the overlay) to follow.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.builds.backends import sandboxing, store
from apps.builds.backends.base import BuildResult
from apps.builds.backends.local.steps import sandbox_mode
from apps.builds.tests.helpers import build, envs_beside_the_cache, resolved, unique
from apps.testing import require

pytestmark = pytest.mark.build

PROBE = r"""
import ctypes, json, os, sys

libc = ctypes.CDLL(None, use_errno=True)


def attempt(call):
    result = call()
    return {"ok": result == 0, "errno": ctypes.get_errno()}


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split()[1]


def probe(where):
    report = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
              "capeff": status("CapEff"), "nonewprivs": status("NoNewPrivs")}
    CLONE_NEWUSER, CLONE_NEWNS, MS_REMOUNT, MS_BIND = 0x10000000, 0x20000, 32, 4096
    report["unshare_user"] = attempt(lambda: libc.unshare(CLONE_NEWUSER))
    report["unshare_mount"] = attempt(lambda: libc.unshare(CLONE_NEWNS))
    report["umount_usr"] = attempt(lambda: libc.umount2(b"/usr", 2))
    report["remount_root_rw"] = attempt(
        lambda: libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None))
    report["read"], report["wrote"] = {}, {}
    for path in TARGETS["read"]:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            report["read"][path] = True
        except OSError:
            report["read"][path] = False
    for path in TARGETS["write"]:
        try:
            with open(path, "a") as handle:
                handle.write("tampered by a repository\n")
            report["wrote"][path] = True
        except OSError:
            report["wrote"][path] = False
    report["listed_envs"] = None
    try:
        report["listed_envs"] = os.listdir(TARGETS["envs"])
    except OSError:
        pass
    with open(os.path.join(HERE, f"attack-{where}.json"), "w") as handle:
        json.dump(report, handle)
"""

SETUP_PY = """\
import os
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
exec(open(os.path.join(HERE, "probe.py")).read())
probe("setup")
setup(name="attack-pkg", version="0.1", py_modules=["attack_pkg"])
"""

POSTBUILD = """\
#!/bin/sh
set -e
python -c 'import os; HERE = os.getcwd(); exec(open("probe.py").read()); probe("postbuild")'
"""


@pytest.fixture(autouse=True)
def _sandboxed(settings: Any, tmp_path: Path, git_host: Any) -> Any:
    settings.BINDERY_SANDBOX = "on"
    try:
        ok = sandbox_mode() == "bwrap"
    except Exception:
        ok = False
    require(ok, "bubblewrap, setpriv and root are needed for the build sandbox")
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    with envs_beside_the_cache() as envs:
        settings.BINDERY_ENVS_DIR = envs
        yield envs


def cache_file() -> Path:
    """A file of the shared uv cache that environments hardlink (toolz's, from the warm cache)."""
    cache = Path(django_settings.BINDERY_UV_CACHE_DIR)
    found = sorted(cache.glob("archive-v0/*/toolz/__init__.py"))
    assert found, "the warm uv cache holds toolz (bin/warm-test-cache)"
    return found[0]


def attack_repo(git_host: Any, targets: dict[str, Any]) -> Any:
    head = f"TARGETS = {json.dumps(targets)}\n"
    return git_host.create_repo(
        unique("attack"),
        {
            "probe.py": head + PROBE,
            "setup.py": SETUP_PY,
            "attack_pkg.py": "",
            "requirements.txt": "toolz==1.0.0\n",
            "postBuild": POSTBUILD,
        },
    )


def report(result: BuildResult, where: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        Path(result.checkout_path, f"attack-{where}.json").read_text()
    )
    return data


def test_setup_py_and_postbuild_run_unprivileged_and_reach_nothing_that_matters(
    git_host: Any, _sandboxed: Path
) -> None:
    # another environment, ready and sealed (its files are what sessions will run)
    victim_repo = git_host.create_repo(unique("victim"), {"requirements.txt": "toolz==1.0.0\n"})
    victim, _ = build(resolved(git_host, victim_repo))
    victim_file = next(Path(victim.environment_path).glob("lib/python*/site-packages/toolz/*.py"))
    var = Path(django_settings.VAR_DIR)
    secrets = [p for p in (var / "secret_key", var / "bindery_encryption_key") if p.is_file()]
    database = Path(str(django_settings.DATABASES["default"]["NAME"]))
    marker = _sandboxed / f"{'f' * 32}.json"  # the ready marker of a key it could predict
    targets = {
        "read": [str(p) for p in [*secrets, database, Path("/etc/shadow")] if p.is_file()],
        "write": [str(victim_file), str(cache_file()), str(marker),
                  str(Path(django_settings.BINDERY_UV_CACHE_DIR) / "planted")],
        "envs": str(_sandboxed),
    }  # fmt: skip
    # the controls: every target is there on the host (or, for the two new files, its
    # directory is), and the probe does see them unsandboxed (test_backend_sandbox)
    assert secrets and Path("/etc/shadow").is_file()
    assert victim_file.is_file() and cache_file().is_file() and marker.parent.is_dir()
    before = {p: Path(p).read_bytes() for p in targets["write"][:2]}

    result, log = build(resolved(git_host, attack_repo(git_host, targets)), base=())

    assert dict(result.packages)["attack-pkg"] == "0.1"  # the build itself succeeds
    ids = sandboxing.ids()
    for where in ("setup", "postbuild"):
        got = report(result, where)
        assert got["uid"] != 0 and got["gid"] != 0 and got["groups"] in ([], [got["gid"]])
        assert got["uid"] in range(ids.build(0), ids.build(999) + 1), got["uid"]
        assert got["capeff"] == "0" * 16
        assert got["nonewprivs"] == "1"
        for call in ("unshare_user", "unshare_mount", "umount_usr", "remount_root_rw"):
            assert got[call]["ok"] is False, (where, call, got[call])
        assert not any(got["read"].values()), (where, got["read"])
        assert set(got["read"]) == set(targets["read"])
        assert not any(got["wrote"].values()), (where, got["wrote"])
        # envs/ cannot be listed (setup.py: 0711), or postBuild sees its own environment only
        assert got["listed_envs"] in (None, [Path(result.environment_path).name]), got
    assert {p: Path(p).read_bytes() for p in before} == before
    assert not marker.exists()
    assert not (Path(django_settings.BINDERY_UV_CACHE_DIR) / "planted").exists()
    # and what it built is sealed: root's, read-only to every sandbox
    env = Path(result.environment_path)
    assert env.stat().st_uid == 0 and not env.stat().st_mode & 0o022
    for path in env.rglob("*"):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert not st.st_mode & 0o022, path
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
        assert st.st_uid in (0, ids.cache), path
    assert "as the build's own user" in log.text


def test_symlinks_planted_by_postbuild_make_the_worker_touch_nothing_outside(
    git_host: Any, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("Name: stolen-secret\nVersion: 6.6.6\n")
    victim.chmod(0o600)  # root's, unreadable to any sandbox
    victim_dir = outside / "victim-dir"
    victim_dir.mkdir()
    postbuild = f"""#!/bin/sh
set -e
site=$(echo $VIRTUAL_ENV/lib/python*/site-packages)
mkdir -p "$site/evil-1.0.dist-info"
ln -s {victim} "$site/evil-1.0.dist-info/METADATA"
ln -s {victim} "$VIRTUAL_ENV/bin/victim-link"
ln -s {victim_dir} "$VIRTUAL_ENV/share-link"
rm -rf "$VIRTUAL_ENV/.bindery" && ln -s {victim_dir} "$VIRTUAL_ENV/.bindery"
ln -s {victim_dir} planted-dir
ln -s {victim} planted-file
mkdir -p made && echo made > made/by-postbuild.txt
"""
    repo = git_host.create_repo(unique("planter"), {"postBuild": postbuild, "README.md": "x\n"})
    assert oct(victim.stat().st_mode & 0o777) == "0o600" and victim_dir.is_dir()  # control

    result, _ = build(resolved(git_host, repo))

    assert victim.stat().st_uid == 0 and oct(victim.stat().st_mode & 0o777) == "0o600"
    assert victim.read_text() == "Name: stolen-secret\nVersion: 6.6.6\n"
    assert list(victim_dir.iterdir()) == []  # nothing was written through a link
    assert os.lstat(victim_dir).st_uid == 0
    assert "stolen-secret" not in dict(result.packages)  # METADATA was not followed
    overlay = store.overlay_path(result.environment_key)
    recorded = {p.relative_to(overlay).as_posix() for p in overlay.rglob("*")}
    assert "made/by-postbuild.txt" in recorded
    assert Path(overlay, "planted-file").is_symlink()  # copied as a link, not its target
    assert not any("stolen-secret" in p.read_text() for p in overlay.rglob("*")
                   if p.is_file() and not p.is_symlink())  # fmt: skip
