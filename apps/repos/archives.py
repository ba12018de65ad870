"""Unpacking downloaded archives without letting them escape their directory.

- zip: every member name passes ``validation.safe_relative_path`` (no absolute paths, no
  ``..``, no backslashes, nothing under ``.git``); links are written as plain files; the
  declared and the actual uncompressed sizes are capped.
- tar: Python's ``data`` extraction filter (no absolute paths, no ``..``, no links leaving
  the directory, no devices, no setuid bits) plus the same caps.

Both raise ``BackendError`` with code ARCHIVE_UNSAFE or ARCHIVE_TOO_LARGE.
"""

from __future__ import annotations

import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path

from apps.repos.validation import safe_relative_path
from portal.errors import BackendError

MAX_MEMBERS = 100_000


def _unsafe(message: str) -> BackendError:
    return BackendError(message, code="ARCHIVE_UNSAFE")


def _too_large(limit: int) -> BackendError:
    return BackendError(
        f"The archive unpacks to more than {limit // (1024 * 1024)} MB.", code="ARCHIVE_TOO_LARGE"
    )


def extract_zip(archive: Path, dest: Path, *, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise _unsafe(f"The archive has more than {MAX_MEMBERS} entries.")
        if sum(m.file_size for m in members) > max_bytes:
            raise _too_large(max_bytes)
        written = 0
        for member in members:
            try:
                relative = safe_relative_path(member.filename.rstrip("/") or ".")
            except ValueError:
                raise _unsafe(
                    f"The archive holds an unsafe path: {member.filename[:200]!r}."
                ) from None
            target = dest.joinpath(*relative.parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, target.open("wb") as out:
                while chunk := source.read(1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_large(max_bytes)
                    out.write(chunk)


def extract_tar(archive: Path, dest: Path, *, max_bytes: int) -> None:
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            members = []
            total = 0
            for member in tf:
                members.append(member)
                total += member.size
                if len(members) > MAX_MEMBERS:
                    raise _unsafe(f"The archive has more than {MAX_MEMBERS} entries.")
                if total > max_bytes:
                    raise _too_large(max_bytes)
            for member in members:
                name = member.name.rstrip("/")
                if name in ("", "."):
                    continue
                try:
                    safe_relative_path(name)
                except ValueError:
                    raise _unsafe(f"The archive holds an unsafe path: {name[:200]!r}.") from None
            tf.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise _unsafe(f"The archive holds an unsafe entry: {exc}.") from None
    except tarfile.TarError:
        raise BackendError(
            "The archive is damaged or not a tar file.", code="ARCHIVE_UNSAFE"
        ) from None


def hoist_single_directory(dest: Path) -> None:
    """When ``dest`` holds exactly one directory and nothing else, move that directory's
    content up (a record zipped as ``project-v1/…``, a vault tarball ``swh:1:dir:…/…``)."""
    entries = list(dest.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return
    holder = dest / f".bindery-unpack-{uuid.uuid4().hex}"
    entries[0].rename(holder)
    for child in list(holder.iterdir()):
        shutil.move(str(child), str(dest / child.name))
    holder.rmdir()
