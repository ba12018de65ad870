"""Disk use of the local builder: a size report and least-recently-used pruning.

The ``prune_builds`` management command wraps ``prune``; it knows which environment keys
running sessions use and passes them as ``keep_keys``.

Sizes count what deleting an entry would free: every inode under it once, hard links
shared with something outside it (files uv hardlinks from its cache) excluded, in
allocated blocks. The uv cache itself is not part of the budget (``uv cache prune``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from django.conf import settings

from apps.builds.backends import store
from apps.builds.backends.base import BuildResult

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class DiskEntry:
    kind: Literal["environment", "checkout", "unfinished"]
    key: str  # the environment key (a checkout's: the environment it uses)
    path: str
    bytes: int
    last_used: datetime | None  # None for unfinished leftovers
    name: str = ""  # checkouts: "<slug>/<commit>"


@dataclass(frozen=True)
class DiskReport:
    entries: tuple[DiskEntry, ...]  # least recently used first

    @property
    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries)


@dataclass(frozen=True)
class PruneReport:
    budget_bytes: int
    dry_run: bool
    before_bytes: int
    after_bytes: int
    removed: tuple[DiskEntry, ...]
    kept_in_use: tuple[str, ...]  # keys in keep_keys that are present
    busy: tuple[str, ...]  # paths skipped because a build holds their lock

    @property
    def under_budget(self) -> bool:
        return self.after_bytes <= self.budget_bytes


def parse_size(text: str | int) -> int:
    """``"20G"``, ``"500M"``, ``"1024"`` → bytes (settings.BINDERY_BUILD_DISK_BUDGET)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 20G or 500M.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def mark_used(result: BuildResult) -> None:
    """Record that a session uses ``result``'s environment and checkout now (LRU order)."""
    env = Path(result.environment_path)
    store.touch(env.with_name(f"{env.name}.json"))
    store.touch(store.checkout_record_path(Path(result.checkout_path)))


def disk_usage() -> DiskReport:
    """Every environment and checkout with its size and last use, least recent first."""
    entries = [*_environments(), *_checkouts()]
    entries.sort(key=lambda e: (e.last_used is not None, e.last_used or _EPOCH))
    return DiskReport(entries=tuple(entries))


def prune(budget_bytes: int, keep_keys: set[str], dry_run: bool = False) -> PruneReport:
    """Remove environments and checkouts, least recently used first, until the total is
    within ``budget_bytes``. Never touches an environment whose key is in ``keep_keys`` or
    its checkouts, nor anything a build holds locked.

    Always removed first, whatever the budget: unfinished environments left by killed
    builds, temporary checkouts older than the build timeout, and checkouts whose
    environment is gone (a rebuild fetches afresh). Then, by last use: a checkout alone,
    or an environment together with all its checkouts.

    Returns what was (with ``dry_run``: would be) removed. Safe to run twice and alongside
    builds.
    """
    report = disk_usage()
    before = report.total_bytes
    total = before
    removed: list[DiskEntry] = []
    busy: list[str] = []
    ready = {e.key for e in report.entries if e.kind == "environment"}

    def drop(entry: DiskEntry, extra: Iterable[DiskEntry] = ()) -> None:
        nonlocal total
        group = [entry, *extra]
        if not dry_run and not _remove(entry, group):
            busy.append(entry.path)
            return
        removed.extend(group)
        total -= sum(e.bytes for e in group)

    for entry in report.entries:
        orphan = entry.kind == "checkout" and entry.key not in ready | keep_keys
        if entry.kind == "unfinished" or orphan:
            drop(entry)

    gone = {e.path for e in removed} | set(busy)
    for entry in report.entries:  # least recently used first
        if total <= budget_bytes:
            break
        if entry.path in gone or entry.key in keep_keys or entry.kind == "unfinished":
            continue
        if entry.kind == "checkout":
            drop(entry)
        else:
            its = [
                e for e in report.entries
                if e.kind == "checkout" and e.key == entry.key and e.path not in gone
            ]  # fmt: skip
            drop(entry, its)
        gone = {e.path for e in removed} | set(busy)

    present = sorted(k for k in keep_keys if k in ready)
    return PruneReport(
        budget_bytes=budget_bytes,
        dry_run=dry_run,
        before_bytes=before,
        after_bytes=total,
        removed=tuple(removed),
        kept_in_use=tuple(present),
        busy=tuple(busy),
    )


# --- pieces -------------------------------------------------------------------------------

_EPOCH = datetime.fromtimestamp(0, UTC)


def _when(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _size(path: Path) -> int:
    """Bytes freed by deleting ``path``: inodes counted once, and a hard-linked file only
    when all its links are inside ``path``."""
    total = 0
    shared: dict[int, tuple[int, int, int]] = {}  # inode -> (links, seen here, bytes)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1 and name in filenames:
                links, seen, size = shared.get(st.st_ino, (st.st_nlink, 0, st.st_blocks * 512))
                shared[st.st_ino] = (links, seen + 1, size)
            else:
                total += st.st_blocks * 512
    return total + sum(size for links, seen, size in shared.values() if seen >= links)


def _environments() -> list[DiskEntry]:
    root = store.envs_dir()
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith(".") or path.name.endswith(".overlay"):
            continue  # an overlay goes with its environment
        key = path.name
        record = store.read_json(store.env_record_path(key))
        if record is None:
            out.append(DiskEntry("unfinished", key, str(path), _size(path), None))
        else:
            stamp = store.last_used(store.env_record_path(key))
            out.append(DiskEntry("environment", key, str(path), _size(path), _when(stamp)))
    return out


def _checkouts() -> list[DiskEntry]:
    root = store.checkouts_dir()
    if not root.is_dir():
        return []
    out = []
    stale = time.time() - float(settings.BINDERY_BUILD_TIMEOUT) - 3600
    for repo in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in repo.iterdir() if p.is_dir()):
            name = f"{repo.name}/{path.name}"
            if path.name.startswith((".tmp-", ".trash-")):
                if path.lstat().st_mtime < stale:
                    out.append(DiskEntry("unfinished", "", str(path), _size(path), None, name))
                continue
            record_path = store.checkout_record_path(path)
            record = store.read_json(record_path)
            key = str(record.get("environment_key", "")) if record else ""
            stamp = store.last_used(record_path)
            out.append(DiskEntry("checkout", key, str(path), _size(path), _when(stamp), name))
    return out


def _remove(entry: DiskEntry, group: list[DiskEntry]) -> bool:
    """Delete ``group`` (an environment and its checkouts, or one entry) under the locks."""
    fds: list[int] = []
    try:
        locks = []
        if entry.kind in ("environment", "unfinished") and entry.key:
            locks.append(store.env_lock_path(entry.key))
        locks += [store.checkout_lock_path(Path(e.path)) for e in group if e.kind == "checkout"]
        for lock in locks:
            fd = store.try_flock(lock)
            if fd is None:
                return False
            fds.append(fd)
        for item in group:
            path = Path(item.path)
            if item.kind == "environment":
                if store.read_json(store.env_record_path(item.key)) is None:
                    return False  # rebuilt or removed meanwhile: leave it alone
                store.env_record_path(item.key).unlink(missing_ok=True)  # no longer ready
            elif item.kind == "checkout":
                store.checkout_record_path(path).unlink(missing_ok=True)
            elif item.key and store.read_json(store.env_record_path(item.key)) is not None:
                return False  # an unfinished env that became ready meanwhile
            shutil.rmtree(path, ignore_errors=True)
            if item.kind in ("environment", "unfinished") and item.key:
                shutil.rmtree(store.overlay_path(item.key), ignore_errors=True)
        return True
    finally:
        for fd in fds:
            os.close(fd)
