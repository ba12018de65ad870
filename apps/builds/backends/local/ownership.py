"""Who owns what in a sandboxed build, settled without statting every file every time: the
shared uv cache before the build (:func:`own_cache`), the environment when the build's uid
gets it (:func:`hand_over`). Same results as ``sandboxing.own_cache`` and
``sandboxing.hand_over``, which stat every entry (a second for a cache of 70,000 files on
two cores, a quarter of one for a Jupyter environment's 27,000 entries, every build).

The cache: ``sandboxing.own_cache`` hands every entry root made in it (older builds,
``bin/warm-test-cache``, uv run as root) to the cache's owner, so the trusted steps can
write, lock and hardlink there. Most of the cache is ``archive-v0`` (the unpacked wheels,
97% of the entries); uv makes each ``archive-v0/<id>`` tree in a temporary directory and
renames it into place, and never changes it afterwards, so such a tree is one uid's
throughout: its top directory says whose it is. :func:`own_cache` runs
``sandboxing.own_cache`` the first time a process needs it; afterwards a quick pass does the
same for the entries outside ``archive-v0`` (a few thousand) and for the ``archive-v0`` trees
whose top is root's, and nothing for the others (the whole walk again when the quick pass
failed). A whole walk cut short (a killed worker)
is redone by the next process's first build; the whole walk chowns a tree's top before what
it holds.

The environment: only its directories change hands, so only directories are statted (the
walk knows files from directories by their directory entries).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from apps import sandbox
from apps.builds.backends import sandboxing

ARCHIVES = "archive-v0"
_owned: set[tuple[str, int]] = set()
_lock = threading.Lock()


def own_cache(cache: Path, envs: Path) -> bool:
    """``sandboxing.own_cache(cache, envs)``, the whole walk the first time this process
    needs it and whenever the quick pass cannot do (see the module docstring); returns
    whether the whole walk ran."""
    key = (str(cache), sandboxing.ids().cache)
    with _lock:
        if key in _owned and _quick_pass(cache, envs):
            return False
        sandboxing.own_cache(cache, envs)
        _owned.add(key)
        return True


def _own_envs(cache: Path, envs: Path) -> None:
    """What ``sandboxing.own_cache`` does besides walking the cache: the environments'
    directory can be passed through, not listed (0711); its parents inside the build
    directory, and the cache's, can be searched."""
    envs.mkdir(parents=True, exist_ok=True)
    os.chmod(envs, 0o711)  # noqa: S103 - traversal only
    sandboxing.traversable(envs.parent)
    sandboxing.traversable(cache.parent)


def _quick_pass(cache: Path, envs: Path) -> bool:
    """Give root's entries to the cache's owner, as ``sandboxing.own_cache`` does (never
    following a symlink), but look into an ``archive-v0`` tree only when its top is root's.
    False when only the whole walk will do (the cache or its directory is not as the whole
    walk leaves them, or something failed)."""
    owner = sandboxing.ids().cache
    top = str(cache)
    try:
        if os.lstat(cache).st_uid == 0 or stat.S_IMODE(os.lstat(cache.parent).st_mode) != 0o755:
            return False
        _own_envs(cache, envs)
        for where, dirs, files, fd in os.fwalk(top, follow_symlinks=False):
            if where == top and ARCHIVES in dirs:
                dirs.remove(ARCHIVES)
                _own_archive_tops(cache / ARCHIVES, owner)
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):  # (another build's temporary)
                    if os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid == 0:
                        os.chown(name, owner, owner, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def hand_over(env: Path, uid: int) -> None:
    """``sandboxing.hand_over``: let ``uid`` (the build) add to an environment the trusted
    steps made; its directories become the build's, the files stay the cache owner's. Run
    as root before untrusted code ran in ``env``; follows no symlink."""
    if stat.S_ISDIR(os.lstat(env).st_mode):
        os.chown(env, uid, uid, follow_symlinks=False)
    for _, dirs, _, fd in os.fwalk(env, follow_symlinks=False):
        for name in dirs:  # (a symlink to a directory is listed here too: not changed)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) != (uid, uid):
                    os.chown(name, uid, uid, dir_fd=fd, follow_symlinks=False)


def _own_archive_tops(archives: Path, owner: int) -> None:
    fd = os.open(archives, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_uid == 0:
            os.fchown(fd, owner, owner)
        for name in os.listdir(fd):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid == 0:
                    # a tree root unpacked: all of it (fd-based, never follows a symlink)
                    sandbox.chown_tree(archives / name, owner, owner, only_from=0)
    finally:
        os.close(fd)
