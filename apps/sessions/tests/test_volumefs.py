"""Measuring and archiving a volume as root never follows a symlink a session planted: not
one that was there before the walk, nor one swapped in for a directory or file between the
walk listing a name and opening it.

The swap is made by the walk's own ``before_open`` hook, which runs after the name was listed
and right before it is opened: the window a running session has. Each test shows that the
target outside the volume exists and is readable, and that a path-based read through the
volume reaches it (what the old ``rglob`` + ``open(path)`` walk did), then that the walk
neither stores its content nor counts its bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.sessions import services
from apps.sessions.backends.local import volumefs
from apps.sessions.backends.local.archive import stream_tar_gz
from apps.sessions.backends.local.backend import LocalSessions

SECRET = b"another user's notebook: TOP-SECRET-4711 " * 64


def archive(
    root: Path, before_open: volumefs.BeforeOpen | None = None
) -> tuple[bytes, dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """The archive's decompressed bytes, its members by name, the files' contents."""
    raw = b"".join(stream_tar_gz(root, "home", before_open=before_open))
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        contents = {m.name: _read(tar, m) for m in tar.getmembers() if m.isfile()}
    return gzip.decompress(raw), members, contents


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the volume holding a secret file (as another user's volume)."""
    place = tmp_path / "other-volume"
    place.mkdir()
    (place / "results.csv").write_bytes(SECRET)
    (place / "notes.txt").write_bytes(SECRET)
    return place


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    (root / "data").mkdir(parents=True)
    (root / "data" / "results.csv").write_bytes(b"a,b\n1,2\n")
    (root / "notes.txt").write_bytes(b"kept")
    return root


def test_planted_symlinks_are_stored_as_links_and_not_counted(volume: Path, outside: Path):
    (volume / "secret-file").symlink_to(outside / "results.csv")
    (volume / "secret-dir").symlink_to(outside)
    # control: the targets are there, readable, and reachable through the volume by path
    assert (outside / "results.csv").read_bytes() == SECRET
    assert (volume / "secret-dir" / "notes.txt").read_bytes() == SECRET

    assert volumefs.measure(volume) == len(b"a,b\n1,2\n") + len(b"kept")
    raw, members, contents = archive(volume)
    assert members["home/secret-file"].issym()
    assert members["home/secret-file"].linkname == str(outside / "results.csv")
    assert members["home/secret-dir"].issym()
    assert not any(name.startswith("home/secret-dir/") for name in members)
    assert contents == {"home/data/results.csv": b"a,b\n1,2\n", "home/notes.txt": b"kept"}
    assert b"TOP-SECRET" not in raw


@pytest.mark.parametrize("swapped", ["data", "notes.txt"])
def test_a_name_swapped_for_a_symlink_after_listing_is_not_followed(
    volume: Path, outside: Path, swapped: str
):
    seen: list[str] = []

    def swap(relpath: str) -> None:  # the session, between the walk's listing and its open
        seen.append(relpath)
        if relpath == swapped:
            target = volume / swapped
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            target.symlink_to(outside / ("" if swapped == "data" else "notes.txt"))

    raw, members, contents = archive(volume, before_open=swap)
    assert swapped in seen  # the walk listed the real entry and the swap happened before open
    # control: after the swap, a read by path through the volume gets the secret
    by_path = volume / ("data/results.csv" if swapped == "data" else "notes.txt")
    assert by_path.read_bytes() == SECRET
    assert members[f"home/{swapped}"].issym()
    assert b"TOP-SECRET" not in raw
    assert all(SECRET not in data for data in contents.values())
    assert not any(name.startswith(f"home/{swapped}/") for name in members)


def test_measure_does_not_count_a_directory_swapped_mid_walk(volume: Path, outside: Path):
    def swap(relpath: str) -> None:
        if relpath == "data":
            shutil.rmtree(volume / "data")
            (volume / "data").symlink_to(outside)

    assert volumefs.measure(volume, before_open=swap) == len(b"kept")
    assert (volume / "data" / "results.csv").read_bytes() == SECRET  # control: swapped


def test_a_fifo_is_skipped_without_blocking(volume: Path):
    os.mkfifo(volume / "pipe")  # opened for reading without O_NONBLOCK, this would hang
    _, members, contents = archive(volume)
    assert "home/pipe" not in members
    assert contents["home/notes.txt"] == b"kept"
    assert volumefs.measure(volume) == len(b"a,b\n1,2\n") + len(b"kept")


def test_a_volume_root_that_is_a_symlink_is_not_followed(tmp_path: Path, outside: Path):
    root = tmp_path / "volume-link"
    root.symlink_to(outside)
    assert (root / "results.csv").read_bytes() == SECRET  # control
    assert volumefs.measure(root) == 0
    with pytest.raises(OSError):
        b"".join(stream_tar_gz(root, "home"))


@pytest.mark.django_db
def test_measure_volume_stores_the_size_without_the_symlinked_secret(settings, tmp_path, outside):
    settings.BINDERY_VOLUMES_DIR = tmp_path / "volumes"
    volume = services.home_volume(UserFactory(username="ann"))
    path = LocalSessions().ensure_volume(services.volume_ref(volume))
    (path / "notes.txt").write_bytes(b"kept")
    (path / "other").symlink_to(outside)
    assert (path / "other" / "results.csv").read_bytes() == SECRET  # control
    services.measure_volume(volume)
    volume.refresh_from_db()
    assert volume.size_bytes == len(b"kept")
    assert volume.size_measured_at is not None
