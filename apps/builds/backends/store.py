"""Where the local builder keeps environments and checkouts, how it marks them ready, and the
locks that keep two builds from making the same thing twice.

Layout (both roots come from settings)::

    BINDERY_ENVS_DIR/<key>/                  the virtualenv
    BINDERY_ENVS_DIR/<key>.json              written last, atomically: the env is ready
    BINDERY_ENVS_DIR/<key>.lock              flock: held while building, reusing or
                                             removing the environment
    BINDERY_CHECKOUTS_DIR/<slug>/<commit>/       the checkout sessions copy
    BINDERY_CHECKOUTS_DIR/<slug>/<commit>.json   written after the checkout is in place
    BINDERY_CHECKOUTS_DIR/<slug>/<commit>.lock   flock while publishing or removing it
    BINDERY_CHECKOUTS_DIR/<slug>/.tmp-<commit>-*  checkouts being prepared

An environment is built in place at its final path, not in a temporary directory renamed
at the end: a virtualenv records its absolute path (in ``bin/`` script shebangs, and in
whatever ``pip install`` inside postBuild writes), so a renamed one breaks. The atomic step
is instead the rename of ``<key>.json`` into place, done last; a directory without its
``.json`` (a build killed half-way) is never used, and the next build of that key, holding
the lock, deletes it first. Checkouts have no such problem: they are prepared in a
temporary directory and renamed into place.

The last use of an environment or a checkout is the modification time of its ``.json``,
set on every use. Lock files are never deleted: unlinking a lock file that another process
has open lets a third process lock a new file of the same name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django.conf import settings

_POLL = 0.2


def envs_dir() -> Path:
    return Path(settings.BINDERY_ENVS_DIR)


def checkouts_dir() -> Path:
    return Path(settings.BINDERY_CHECKOUTS_DIR)


def env_path(key: str) -> Path:
    return envs_dir() / key


def env_record_path(key: str) -> Path:
    return envs_dir() / f"{key}.json"


def env_lock_path(key: str) -> Path:
    return envs_dir() / f"{key}.lock"


def checkout_record_path(checkout: Path) -> Path:
    return checkout.with_name(f"{checkout.name}.json")


def checkout_lock_path(checkout: Path) -> Path:
    return checkout.with_name(f"{checkout.name}.lock")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (readers see the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_record(key: str) -> dict[str, Any] | None:
    """The record of a ready environment, or None (absent, half-built or being removed)."""
    record = read_json(env_record_path(key))
    if record is None or not (env_path(key) / "pyvenv.cfg").is_file():
        return None
    return record


def touch(path: Path) -> None:
    """Mark a record as used now (its mtime is the last-used time)."""
    with suppress(FileNotFoundError):
        os.utime(path)


def last_used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@contextmanager
def flock(
    path: Path,
    *,
    cancel: threading.Event | None = None,
    check: Callable[[], None] = lambda: None,
    on_wait: Callable[[], None] = lambda: None,
) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block.

    Waits for it while calling ``check()`` every 0.2 s (which raises to give up: timeout,
    cancel) and ``on_wait()`` once if it has to wait. Locks belong to the open file, so two
    threads of one process exclude each other too; the kernel drops them when a process
    dies, so a killed build never leaves its key locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not waited:
                waited = True
                on_wait()
            check()
            if cancel is not None:
                cancel.wait(_POLL)
            else:
                time.sleep(_POLL)
            check()
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def try_flock(path: Path) -> int | None:
    """An exclusive lock on ``path`` without waiting: the open fd, or None if it is held."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def overlay_path(key: str) -> Path:
    """What postBuild wrote in its checkout, kept for later commits (root's, beside the
    environment: the build's sandbox never writes there)."""
    return envs_dir() / f"{key}.overlay"
