"""Walking a user's volume as root without following a symlink the user planted.

A running session can write its volume while the portal (root) measures or archives it, and
can swap a directory or file for a symlink between the moment a walk lists a name and the
moment it opens it. Path-based walks (``Path.rglob`` then ``open(path)``) then read whatever
the link points to: another user's volume, the portal's secrets. Here every step goes
through a file descriptor: the root is opened with ``O_NOFOLLOW | O_DIRECTORY``, each entry
is opened relative to its parent's descriptor (``dir_fd``) with ``O_NOFOLLOW``, and what an
entry is comes from ``fstat`` of the opened descriptor, not from the listing. A name that is
a symlink when it is opened is reported as a symlink (stored as a link in the archive, its
target never read nor counted); anything but directories, regular files and symlinks (FIFOs,
sockets, devices) is skipped, and so is a name that vanished or changed kind mid-walk.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

MAX_DEPTH = 256  # one open descriptor per level; deeper directories are skipped
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Kind = Literal["dir", "file", "symlink"]
BeforeOpen = Callable[[str], None]


@dataclass(frozen=True)
class Entry:
    """One walked name. ``fd`` is open (and owned by the walk) for files only, while the
    entry is the walk's current one; ``stat`` comes from that descriptor (``lstat`` for a
    symlink); ``target`` is a symlink's text."""

    relpath: str  # "" for the root, else "a/b" (no leading slash)
    kind: Kind
    stat: os.stat_result
    fd: int = -1
    target: str = ""


def walk(root: str | os.PathLike[str], *, before_open: BeforeOpen | None = None) -> Iterator[Entry]:
    """Every directory, regular file and symlink under ``root`` (itself first), depth first,
    names sorted. ``before_open(relpath)`` is called after a name was listed and right before
    it is opened: the window in which a session can swap it (tests use it to do so).

    Raises OSError if ``root`` itself cannot be opened as a directory (ELOOP when it is a
    symlink); entries that change under the walk are skipped or reported as symlinks.
    """
    fd = os.open(root, _OPEN | os.O_DIRECTORY)
    try:
        yield Entry("", "dir", os.fstat(fd))
        yield from _walk_dir(fd, "", 1, before_open)
    finally:
        os.close(fd)


def _walk_dir(dir_fd: int, prefix: str, depth: int, hook: BeforeOpen | None) -> Iterator[Entry]:
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError:
        return
    for name in names:
        relpath = f"{prefix}{name}"
        try:
            # the listing's idea of the entry only filters out what is never opened (a device
            # could be one open away from a side effect); the kind used is the fstat's below
            listed = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISDIR(listed.st_mode) or stat.S_ISREG(listed.st_mode)
                or stat.S_ISLNK(listed.st_mode)):  # fmt: skip
            continue
        if hook is not None:
            hook(relpath)
        try:
            fd = os.open(name, _OPEN, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink now, whatever it was when listed
                link = _symlink(dir_fd, name, relpath)
                if link is not None:
                    yield link
            continue
        try:
            opened = os.fstat(fd)
            if stat.S_ISREG(opened.st_mode):
                yield Entry(relpath, "file", opened, fd=fd)
            elif stat.S_ISDIR(opened.st_mode):
                yield Entry(relpath, "dir", opened)
                if depth < MAX_DEPTH:
                    yield from _walk_dir(fd, f"{relpath}/", depth + 1, hook)
        finally:
            os.close(fd)


def _symlink(dir_fd: int, name: str, relpath: str) -> Entry | None:
    try:
        target = os.readlink(name, dir_fd=dir_fd)
        return Entry(relpath, "symlink", os.stat(name, dir_fd=dir_fd, follow_symlinks=False),
                     target=target)  # fmt: skip
    except OSError:  # gone, or no longer a symlink: skipped
        return None


def measure(path: str | os.PathLike[str], *, before_open: BeforeOpen | None = None) -> int:
    """Bytes in the regular files under ``path`` (symlinks and their targets not counted);
    0 when ``path`` does not exist or is not a directory (a symlink to one included)."""
    total = 0
    try:
        for entry in walk(path, before_open=before_open):
            if entry.kind == "file":
                total += entry.stat.st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        return 0
    return total
