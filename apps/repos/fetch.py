"""Fetch a resolved repository into a directory: a git checkout at the resolved commit, the
files of a record, or a Software Heritage directory.

Every URL (the clone URL, each record file, every redirect) passes the same host rules as
at resolution time (``apps.repos.validation``): a DNS answer or a record that changed since
cannot point a fetch at a private address. Record files are downloaded with size caps,
checked against their checksums when the record gives one, and written only inside
``dest``; a record that is a single zip archive is unpacked, as repo2docker does.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import requests
from django.conf import settings

from apps.repos import http
from apps.repos.archives import extract_tar, extract_zip, hoist_single_directory
from apps.repos.git import run_git
from apps.repos.types import GitCredential, RecordFile, ResolvedRepo
from apps.repos.validation import check_url, git_pin_config, safe_relative_path
from portal.errors import BackendError, BinderyError

_SHA = re.compile(r"^[0-9a-f]{40}$")
_HASHES = ("md5", "sha1", "sha256", "sha512")
DEFAULT_MAX_BYTES = 2 * 1024**3


def max_record_bytes() -> int:
    """Cap on what one record (all its files, or the unpacked archive) may take."""
    return int(getattr(settings, "BINDERY_RECORD_MAX_BYTES", DEFAULT_MAX_BYTES))


def _backend_error(exc: BinderyError) -> BackendError:
    return BackendError(exc.message, code=exc.code, permanent=exc.status < 500)


def credential_for_host(credentials: tuple[GitCredential, ...], host: str) -> GitCredential | None:
    return next((c for c in credentials if c.host == host), None)


def fetch(
    repo: ResolvedRepo,
    dest: Path,
    *,
    credentials: tuple[GitCredential, ...] = (),
    log: Callable[[str], None] = lambda line: None,
    timeout: float = 600.0,
    cancel: threading.Event | None = None,
) -> None:
    """Materialise ``repo`` at ``dest`` (which must not exist). Removes ``dest`` on failure.

    Raises BackendError (GIT_FAILED, GIT_TIMEOUT, BUILD_CANCELLED, HOST_FORBIDDEN,
    RECORD_DOWNLOAD_FAILED, RECORD_TOO_LARGE, RECORD_CHECKSUM_MISMATCH, RECORD_PATH_UNSAFE,
    ARCHIVE_UNSAFE, SWH_VAULT_FAILED, FETCH_TIMEOUT...). Safe to call again with a new
    ``dest``.
    """
    if dest.exists():
        raise BackendError(f"{dest} already exists.", code="FETCH_TARGET_EXISTS")
    dest.mkdir(parents=True)
    deadline = time.monotonic() + timeout
    try:
        if repo.kind == "git":
            _fetch_git(repo, dest, credentials, log, timeout, cancel)
        elif repo.kind == "record":
            _fetch_record(repo, dest, log, deadline, cancel)
        elif repo.kind == "swh":
            _fetch_swh(repo, dest, log, deadline, cancel)
        else:
            raise BackendError(
                f"Fetching {repo.kind} sources is not supported.", code="FETCH_UNSUPPORTED"
            )
    except BinderyError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise _backend_error(exc) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _fetch_git(
    repo: ResolvedRepo,
    dest: Path,
    credentials: tuple[GitCredential, ...],
    log: Callable[[str], None],
    timeout: float,
    cancel: threading.Event | None,
) -> None:
    if not _SHA.match(repo.resolved_ref):
        raise BackendError("A git source must be pinned to a commit.", code="REF_NOT_RESOLVED")
    credential = credential_for_host(credentials, repo.host)
    url, check = check_url(repo.repo_url)
    pin = git_pin_config(url, check)  # the address checked now, and no redirects
    run_git(["init", "-q", "--", str(dest)], timeout=30)
    run_git(["-C", str(dest), "remote", "add", "origin", "--", repo.repo_url], timeout=30)
    log(f"Fetching {repo.display_name} at {repo.resolved_ref[:12]}")
    try:
        # Servers speaking protocol v2 (GitHub, GitLab, git http-backend) serve any commit.
        run_git(
            [*pin, "-C", str(dest), "fetch", "--depth=1", "--progress", "origin", "--",
             repo.resolved_ref],
            on_line=log, credential=credential, cancel=cancel, timeout=timeout,
        )  # fmt: skip
    except BackendError as exc:
        if exc.code != "GIT_FAILED":
            raise
        log("The server refused a shallow fetch of the commit; fetching the full history")
        everything = "+refs/*:refs/remotes/origin/*"
        run_git(
            [*pin, "-C", str(dest), "fetch", "--progress", "origin", "--", everything],
            on_line=log, credential=credential, cancel=cancel, timeout=timeout,
        )  # fmt: skip
    run_git(["-C", str(dest), "checkout", "-q", "--detach", repo.resolved_ref], timeout=120)


# --- records ---------------------------------------------------------------------------------


def _check_running(deadline: float, cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise BackendError("The build was cancelled.", code="BUILD_CANCELLED")
    if time.monotonic() > deadline:
        raise BackendError(
            "Downloading the record took too long.", code="FETCH_TIMEOUT", permanent=False
        )


def _download(
    url: str,
    target: Path,
    *,
    limit: int,
    checksum: str,
    deadline: float,
    cancel: threading.Event | None,
) -> int:
    """Stream ``url`` into ``target``; return the bytes written."""
    algorithm, _, expected = checksum.partition(":")
    hasher = (
        hashlib.new(algorithm, usedforsecurity=False) if expected and algorithm in _HASHES else None
    )
    written = 0
    name = target.name
    try:
        with http.open_url(url, request_timeout=max(1.0, deadline - time.monotonic())) as response:
            if response.status_code != 200:
                transient = response.status_code >= 500 or response.status_code == 429
                raise BackendError(
                    f"Downloading {name} failed: the server answered {response.status_code}.",
                    code="RECORD_DOWNLOAD_FAILED",
                    permanent=not transient,
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            with target.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1024 * 1024):
                    _check_running(deadline, cancel)
                    written += len(chunk)
                    if written > limit:
                        raise _too_large(limit)
                    if hasher is not None:
                        hasher.update(chunk)
                    out.write(chunk)
    except requests.RequestException:
        raise BackendError(
            f"The connection broke while downloading {name}.",
            code="RECORD_DOWNLOAD_FAILED",
            permanent=False,
        ) from None
    if hasher is not None and hasher.hexdigest() != expected.lower():
        raise BackendError(
            f"{name} does not match the {algorithm} checksum the record gives: it was damaged "
            "or changed.",
            code="RECORD_CHECKSUM_MISMATCH",
        )
    return written


def _too_large(limit: int) -> BackendError:
    return BackendError(
        f"The record is larger than this site's limit of {limit // (1024 * 1024)} MB.",
        code="RECORD_TOO_LARGE",
    )


def _record_plan(files: tuple[RecordFile, ...]) -> list[tuple[RecordFile, PurePosixPath]]:
    plan: list[tuple[RecordFile, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    for record_file in files:
        try:
            relative = safe_relative_path(record_file.path)
        except ValueError:
            raise BackendError(
                f"The record lists an unsafe file path: {record_file.path[:200]!r}.",
                code="RECORD_PATH_UNSAFE",
            ) from None
        if relative in seen:
            raise BackendError(f"The record lists {relative} twice.", code="RECORD_PATH_UNSAFE")
        seen.add(relative)
        plan.append((record_file, relative))
    if not plan:
        raise BackendError("The record has no files to download.", code="RECORD_EMPTY")
    return plan


def _fetch_record(
    repo: ResolvedRepo,
    dest: Path,
    log: Callable[[str], None],
    deadline: float,
    cancel: threading.Event | None,
) -> None:
    plan = _record_plan(repo.files)  # every path is checked before anything is downloaded
    budget = max_record_bytes()
    if sum(f.size or 0 for f, _ in plan) > budget:
        raise _too_large(budget)
    log(f"Fetching {repo.display_name} ({len(plan)} file(s))")
    target = dest
    for record_file, relative in plan:
        _check_running(deadline, cancel)
        target = dest.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = f" ({record_file.size} bytes)" if record_file.size is not None else ""
        log(f"Downloading {relative}{size}")
        budget -= _download(
            record_file.url,
            target,
            limit=budget,
            checksum=record_file.checksum,
            deadline=deadline,
            cancel=cancel,
        )
    only = plan[0][1]
    if len(plan) == 1 and only.name.lower().endswith(".zip") and zipfile.is_zipfile(target):
        log(f"Unpacking {only}")
        _unpack(target, dest, extract_zip)


def _unpack(archive: Path, dest: Path, extract: Callable[..., None]) -> None:
    """Move ``archive`` out of ``dest``, unpack it into ``dest``, drop it."""
    holder = Path(tempfile.mkdtemp(prefix=".bindery-archive-", dir=dest.parent))
    try:
        moved = holder / "archive"
        parent = archive.parent
        shutil.move(str(archive), moved)
        while parent != dest and not any(parent.iterdir()):  # folders only the archive made
            parent.rmdir()
            parent = parent.parent
        extract(moved, dest, max_bytes=max_record_bytes())
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    hoist_single_directory(dest)


# --- Software Heritage ----------------------------------------------------------------------


def _fetch_swh(
    repo: ResolvedRepo,
    dest: Path,
    log: Callable[[str], None],
    deadline: float,
    cancel: threading.Event | None,
) -> None:
    """Ask the vault to cook the directory, wait until it is done, download and unpack."""
    interval = float(getattr(settings, "BINDERY_SWH_POLL_INTERVAL", 5.0))
    waiter = cancel or threading.Event()
    log(f"Asking Software Heritage for {repo.resolved_ref}")
    status = http.fetch_json(repo.archive_url, method="POST")
    while status.get("status") not in ("done", "failed"):
        log(f"Software Heritage is preparing the archive ({status.get('status', 'pending')})")
        if waiter.wait(interval):
            raise BackendError("The build was cancelled.", code="BUILD_CANCELLED")
        _check_running(deadline, cancel)
        status = http.fetch_json(repo.archive_url)
    if status.get("status") == "failed" or not isinstance(status.get("fetch_url"), str):
        reason = status.get("progress_message") or "no reason given"
        raise BackendError(
            f"Software Heritage could not prepare the archive: {str(reason)[:300]}",
            code="SWH_VAULT_FAILED",
        )
    archive = dest / ".bindery-swh.tar.gz"
    log("Downloading the archive")
    _download(
        status["fetch_url"],
        archive,
        limit=max_record_bytes(),
        checksum="",
        deadline=deadline,
        cancel=cancel,
    )
    log("Unpacking the archive")
    _unpack(archive, dest, extract_tar)
