"""Stream a directory as a .tar.gz without writing it to disk first."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path


class _Chunks:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def stream_tar_gz(root: Path, arcname: str) -> Iterator[bytes]:
    """Yield a gzipped tar of ``root``; symlinks are stored as links, never followed."""
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|gz") as tar:  # type: ignore[call-overload]
        tar.add(str(root), arcname=arcname, recursive=False)
        for path in sorted(root.rglob("*")):
            tar.add(str(path), arcname=f"{arcname}/{path.relative_to(root)}", recursive=False)
            data = sink.take()
            if data:
                yield data
    yield sink.take()
