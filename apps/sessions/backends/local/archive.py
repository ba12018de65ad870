"""Stream a volume as a .tar.gz without writing it to disk first.

The walk is :func:`apps.sessions.backends.local.volumefs.walk` (descriptors, ``O_NOFOLLOW``):
a session that swaps a directory or file for a symlink while the archive is made gets a
symlink in the archive, never the content of what it points to.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from apps.sessions.backends.local.volumefs import BeforeOpen, Entry, walk

_CHUNK = 1024 * 1024


class _Chunks:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


class _Exactly:
    """Reads exactly ``size`` bytes from ``fd``: a file that shrank while archived is padded
    with NULs, one that grew is cut (the tar header already holds the size)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left = fd, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        parts, got = [], 0
        while got < n:
            data = os.read(self.fd, min(n - got, _CHUNK))
            if not data:
                parts.append(b"\0" * (n - got))
                break
            parts.append(data)
            got += len(data)
        self.left -= n
        return b"".join(parts)


def _tarinfo(entry: Entry, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(entry.stat.st_mode)
    info.mtime = int(entry.stat.st_mtime)
    info.uid, info.gid = entry.stat.st_uid, entry.stat.st_gid
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    else:
        info.type, info.size = tarfile.REGTYPE, entry.stat.st_size
    return info


def stream_tar_gz(
    root: Path, arcname: str, *, before_open: BeforeOpen | None = None
) -> Iterator[bytes]:
    """Yield a gzipped tar of ``root`` under ``arcname``: its directories, regular files, and
    symlinks stored as symlinks (never followed: their targets are neither read nor listed).
    ``before_open``: see :func:`~apps.sessions.backends.local.volumefs.walk`."""
    sink = _Chunks()
    with tarfile.open(fileobj=cast(BinaryIO, sink), mode="w|gz") as tar:
        for entry in walk(root, before_open=before_open):
            name = f"{arcname}/{entry.relpath}" if entry.relpath else arcname
            info = _tarinfo(entry, name)
            source = _Exactly(entry.fd, info.size) if entry.kind == "file" else None
            tar.addfile(info, cast(BinaryIO | None, source))
            data = sink.take()
            if data:
                yield data
    yield sink.take()
