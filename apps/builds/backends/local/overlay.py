"""postBuild's output, recorded once and replayed onto later commits' checkouts.

postBuild runs once per environment, in the checkout of the commit that built it. What it
wrote, changed or deleted in that checkout (``git status``, ignored files included) is
recorded in the environment (``.bindery/overlay``) and replayed onto the checkout of every
later commit that reuses the environment: added files are copied when the new commit has
no file of that name, changes and deletions of tracked files are applied when the new
commit still has the file as postBuild found it. Otherwise the commit's own file wins and
the build carries a warning naming it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from apps import sandbox
from apps.builds.backends import sandboxing, store
from apps.builds.backends.local.runner import Job
from apps.repos.git import run_git


def signatures(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``: what a non-git checkout looked like."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def record_overlay(
    job: Job, checkout: Path, overlay: Path, before: dict[str, tuple[int, int]] | None
) -> list[dict[str, str]]:
    """What postBuild changed in ``checkout``, with its files copied under ``overlay`` (beside
    the environment, root's: the sandbox never sees it) without following a symlink.
    ``before``: the checkout's ``signatures`` before postBuild when it is not a git checkout,
    else None."""
    changes = _changes(job, checkout, before)
    recorded, refused = sandboxing.record_overlay(
        checkout, overlay, [rel for rel, change, _ in changes if change != "deleted"]
    )
    kept = set(recorded)
    items = [
        {"path": rel, "change": change, "blob": blob}
        for rel, change, blob in changes
        if change == "deleted" or rel in kept
    ]
    for reason in refused[:20]:
        job.warn(f"postBuild output {reason} could not be recorded")
    if items:
        job.say(f"postBuild changed {len(items)} files in the checkout; recorded for reuse")
    return items


def apply_overlay(job: Job, key: str, record: dict[str, Any], checkout: Path) -> None:
    """Replay what postBuild did to its checkout onto ``checkout``."""
    source = store.overlay_path(key)
    conflicts: list[str] = []
    for item in record.get("overlay", []):
        rel, change, blob = item["path"], item["change"], item.get("blob", "")
        target = checkout / rel
        if not _inside(checkout, target.parent):
            conflicts.append(rel)  # the new commit made a parent a symlink out
            continue
        current = _git_blob(target)
        if (change == "added" and current is None) or (change == "modified" and current == blob):
            sandbox.copy_nofollow(source, rel, checkout)
        elif change == "deleted" and current == blob:
            target.unlink()
        elif not (change == "deleted" and current is None):
            conflicts.append(rel)
    if record.get("overlay"):
        job.say(f"Applied {len(record['overlay']) - len(conflicts)} files postBuild made")
    if conflicts:
        job.warn(
            "This commit changed files that postBuild also wrote when the environment was "
            f"built; the commit's version is kept: {', '.join(sorted(conflicts)[:20])}."
        )


def _changes(
    job: Job, checkout: Path, before: dict[str, tuple[int, int]] | None
) -> list[tuple[str, str, str]]:
    """(path, added|modified|deleted, git blob before) for what postBuild did."""
    if before is None:
        status = run_git(
            ["-C", str(checkout), "status", "--porcelain=v1", "-z", "--ignored=traditional",
             "--untracked-files=all", "--no-renames"], timeout=120,
        )  # fmt: skip
        listing = run_git(["-C", str(checkout), "ls-tree", "-r", "-z", "--full-tree", "HEAD"])
        tree = {}
        for entry in listing.split("\0"):
            if "\t" in entry:
                meta, rel = entry.split("\t", 1)
                tree[rel] = meta.split()[2]
        changes = []
        for entry in status.split("\0"):
            if len(entry) < 4:
                continue
            code, rel = entry[:2], entry[3:]
            kind = "added" if code in ("??", "!!") else "deleted" if "D" in code else "modified"
            changes.append((rel, kind, tree.get(rel, "")))
        return changes
    # Not a git checkout (a record): new files are replayed; for changes to the record's own
    # files the earlier content is unknown, so they cannot be replayed safely.
    after = signatures(checkout)
    touched = sorted(
        rel for rel in before.keys() | after.keys()
        if rel in before and before[rel] != after.get(rel)
    )  # fmt: skip
    if touched:
        job.warn(
            "postBuild changed or deleted files of the record itself; later versions that "
            f"reuse this environment will not get those changes: {', '.join(touched[:20])}."
        )
    return [(rel, "added", "") for rel in sorted(after.keys() - before.keys())]


def _git_blob(path: Path) -> str | None:
    """git's blob id for a file (or symlink), None if there is none."""
    try:
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _inside(root: Path, path: Path) -> bool:
    resolved, top = path.resolve(), root.resolve()
    return resolved == top or resolved.is_relative_to(top)
