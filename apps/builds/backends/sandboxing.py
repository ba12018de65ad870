"""Who runs each step of a local build, what it sees, and how root reads what it left.

A build has two kinds of steps (``apps.sandbox`` says how a sandbox is made):

- **trusted**: uv alone, run as the shared cache's owner (``Ids.cache``): ``uv venv``, the
  conda names lookup and ``uv pip install --no-build`` — wheels only, so no code from a
  package or the repository runs. These steps fill the shared uv cache and hardlink from
  it: the cache only ever holds what uv itself downloaded and unpacked.
- **untrusted**: everything that runs code a stranger wrote, as the build's own uid
  (``Ids.build(slot)``, one per concurrent build, see :func:`build_slot`): a ``uv pip
  install`` that has to build source distributions or the repository's own package
  (``setup.py``, ``pyproject.toml``), against a private *farm* of the shared cache (a
  hardlinked copy whose files it can read but not change; what it adds is thrown away),
  bytecode compilation, the removal of dropped packages, and postBuild.

Ownership keeps builds apart where binds cannot (uv hardlinks only within one mount, so the
build directory is bound whole): the build directory, ``envs/`` and every ready environment
are root's and read-only to sandboxes; a build's new environment is its own while it is
built and sealed (:func:`apps.sandbox.seal_tree`) before its ready record is written; the
cache is its owner's. Files of the cache hardlinked into an environment keep the cache's
owner (so later trusted steps can still hardlink them) and lose every write bit but the
owner's.
"""

from __future__ import annotations

import contextlib
import email.parser
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from packaging.utils import canonicalize_name

from apps import sandbox

BUILD_SLOTS = 256
FARMS = ".bindery-farms"


def ids() -> sandbox.Ids:
    return sandbox.Ids(int(getattr(settings, "BINDERY_SANDBOX_UID_BASE", 1_000_000)))


@dataclass(frozen=True)
class Slot:
    """One concurrent build's uid and its private directories."""

    number: int
    uid: int
    farm: Path


@contextlib.contextmanager
def build_slot(cache: Path) -> Iterator[Slot]:
    """A free build slot, held (flock) for the block: its uid is this build's alone. Its
    farm directory is removed before and after. Raises OSError when every slot is taken."""
    locks = Path(settings.BINDERY_BUILD_DIR) / ".bindery-slots"
    locks.mkdir(parents=True, exist_ok=True)
    for number in range(BUILD_SLOTS):
        fd = os.open(locks / f"{number}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        farm = cache.parent / FARMS / str(number)
        try:
            remove_tree(farm)
            yield Slot(number, ids().build(number), farm)
        finally:
            remove_tree(farm)
            os.close(fd)
        return
    raise OSError(errno.EBUSY, f"all {BUILD_SLOTS} build slots are in use")


def remove_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)  # never follows a symlink (fd-based)


def own_cache(cache: Path, envs: Path) -> None:
    """Give the shared uv cache to its owner (``Ids.cache``), entries made by root (older
    builds, ``bin/warm-test-cache``) included; fast when nothing has to change. The
    environments' directory can be passed through but not listed (0711): a build cannot
    find the keys of other environments."""
    envs.mkdir(parents=True, exist_ok=True)
    os.chmod(envs, 0o711)  # noqa: S103 - traversal only
    traversable(envs.parent)
    traversable(cache.parent)
    cache.mkdir(parents=True, exist_ok=True)
    owner = ids().cache
    os.chmod(cache.parent, 0o755)  # noqa: S103 - traversed by sandboxes
    sandbox.chown_tree(cache, owner, owner, only_from=0)


def traversable(directory: Path) -> None:
    """Sandboxes reach environments and the cache through their parents inside the build
    directory (bound whole): give those directories the search bit (never read or write)."""
    top = Path(settings.BINDERY_BUILD_DIR).resolve()
    current = directory.resolve()
    while current == top or current.is_relative_to(top):
        mode = current.stat().st_mode
        if mode & 0o011 != 0o011:
            os.chmod(current, (mode & 0o7777) | 0o011)  # noqa: S103 - search bit only
        if current == top:
            break
        current = current.parent


def make_farm(cache: Path, slot: Slot) -> Path:
    """The slot's private copy of the cache: its own directories (writable), the cache's
    files hardlinked (readable, not writable: they are the cache's owner's)."""
    remove_tree(slot.farm)
    slot.farm.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(slot.farm.parent, 0o711)  # noqa: S103 - traversal only
    _link_tree(cache, slot.farm)
    sandbox.chown_tree(slot.farm, slot.uid, slot.uid, dirs_only=True)
    _own_markers(slot.farm, slot.uid)
    os.chmod(slot.farm, 0o700)
    return slot.farm


def _link_tree(source: Path, target: Path) -> None:
    """``cp -al``, tolerant of a cache that trusted steps of other builds change meanwhile
    (entries that vanish are left out); symlinks are copied as symlinks."""
    os.mkdir(target, 0o755)
    top = str(source)
    for where, dirs, files, fd in os.fwalk(source, follow_symlinks=False):
        rel = os.path.relpath(where, top)
        here = target if rel == "." else target / rel
        for name in dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(here / name, 0o755)
        for name in files:
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                if os.path.islink(os.path.join(where, name)):
                    os.symlink(os.readlink(name, dir_fd=fd), here / name)
                else:
                    os.link(name, here / name, src_dir_fd=fd, follow_symlinks=False)


def _own_markers(farm: Path, uid: int) -> None:
    """uv rewrites the small files at the top of its cache and of each bucket (``.lock``,
    ``CACHEDIR.TAG``, ``.gitignore``, ``.git``) when it opens the cache: the farm gets its
    own copies of those, the build's."""
    for directory in [farm, *(p for p in farm.iterdir() if p.is_dir() and not p.is_symlink())]:
        for entry in directory.iterdir():
            if entry.is_symlink() or not entry.is_file():
                continue
            data = entry.read_bytes()
            entry.unlink()
            entry.write_bytes(data)
            os.chown(entry, uid, uid)


def new_environment(env: Path, uid: int) -> None:
    """An empty directory for an environment, ``uid``'s (uv makes the venv in it)."""
    remove_tree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(env, 0o755)
    os.chown(env, uid, uid)


def hand_over(env: Path, uid: int) -> None:
    """Let ``uid`` (the build) add to an environment the trusted steps made: its
    directories become the build's; the files stay the cache's owner's (read-only to it)."""
    sandbox.chown_tree(env, uid, uid, dirs_only=True)


def give_checkout(checkout: Path, uid: int) -> None:
    """The build's uid may change the working tree (postBuild, setup.py); ``.git`` stays
    root's (and is bound read-only)."""
    sandbox.chown_tree(checkout, uid, uid, skip_top=(".git",))
    os.chmod(checkout, 0o755)  # noqa: S103 - the trusted steps read it (requirement files)


def packages(env: Path) -> list[list[str]]:
    """``[name, version]`` of every distribution in ``env``'s site-packages, read as root
    without following a symlink the build may have planted (a ``METADATA`` pointing at
    ``/etc/shadow`` is skipped)."""
    found: dict[str, str] = {}
    parser = email.parser.HeaderParser()
    for site in site_packages(env):
        for entry in list_dir(env, site):
            if not entry.endswith(".dist-info"):
                continue
            try:
                text = sandbox.read_nofollow(env, "/".join([*site, entry, "METADATA"]),
                                             limit=4 * 1024 * 1024)  # fmt: skip
            except OSError:
                continue
            headers = parser.parsestr(text.decode("utf-8", errors="replace"))
            name, version = headers.get("Name"), headers.get("Version")
            if name and version:
                found[canonicalize_name(str(name))] = str(version)
    return [[name, found[name]] for name in sorted(found)]


def site_packages(env: Path) -> list[list[str]]:
    """The parts (``["lib", "python3.11", "site-packages"]``) of ``env``'s site-packages
    directories, listed without following a symlink."""
    return [["lib", python, "site-packages"] for python in list_dir(env, ["lib"])
            if python.startswith("python")]  # fmt: skip


def list_dir(root: Path, parts: list[str]) -> list[str]:
    """The sorted names in ``root/parts``, reached without following a symlink; [] when it
    cannot be opened."""
    try:
        fd = sandbox.open_dir(root, parts)
    except OSError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def record_overlay(checkout: Path, overlay: Path, paths: list[str]) -> tuple[list[str], list[str]]:
    """Copy ``paths`` (relative, as git listed them) from the checkout postBuild changed to
    ``overlay`` (root's, outside the sandbox's reach), never following a symlink in the
    checkout. Returns (recorded, refused with the reason)."""
    remove_tree(overlay)
    overlay.mkdir(parents=True)
    os.chmod(overlay, 0o700)
    recorded, refused = [], []
    for rel in paths:
        try:
            sandbox.copy_nofollow(checkout, rel, overlay)
        except OSError as exc:
            refused.append(f"{rel} ({exc.strerror or exc})")
            continue
        recorded.append(rel)
    return recorded, refused


__all__ = [
    "BUILD_SLOTS",
    "Slot",
    "build_slot",
    "give_checkout",
    "hand_over",
    "ids",
    "make_farm",
    "new_environment",
    "own_cache",
    "packages",
    "record_overlay",
]
