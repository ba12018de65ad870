"""Fetch a resolved repository into a directory: a git checkout at the resolved commit, or
the files of a record."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from apps.repos.git import run_git
from apps.repos.types import GitCredential, ResolvedRepo
from portal.errors import BackendError

_SHA = re.compile(r"^[0-9a-f]{40}$")


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

    Raises BackendError (GIT_FAILED, GIT_TIMEOUT, BUILD_CANCELLED, ...).
    """
    if dest.exists():
        raise BackendError(f"{dest} already exists.", code="FETCH_TARGET_EXISTS")
    dest.mkdir(parents=True)
    try:
        if repo.kind == "git":
            _fetch_git(repo, dest, credentials, log, timeout, cancel)
        else:
            raise BackendError(
                f"Fetching {repo.kind} sources is not available yet.", code="FETCH_UNSUPPORTED"
            )
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
    run_git(["init", "-q", "--", str(dest)], timeout=30)
    run_git(["-C", str(dest), "remote", "add", "origin", "--", repo.repo_url], timeout=30)
    log(f"Fetching {repo.display_name} at {repo.resolved_ref[:12]}")
    try:
        # Servers speaking protocol v2 (GitHub, GitLab, git http-backend) serve any commit.
        run_git(
            ["-C", str(dest), "fetch", "--depth=1", "--progress", "origin", "--",
             repo.resolved_ref],
            on_line=log, credential=credential, cancel=cancel, timeout=timeout,
        )  # fmt: skip
    except BackendError as exc:
        if exc.code != "GIT_FAILED":
            raise
        log("The server refused a shallow fetch of the commit; fetching the full history")
        everything = "+refs/*:refs/remotes/origin/*"
        run_git(
            ["-C", str(dest), "fetch", "--progress", "origin", "--", everything],
            on_line=log, credential=credential, cancel=cancel, timeout=timeout,
        )  # fmt: skip
    run_git(["-C", str(dest), "checkout", "-q", "--detach", repo.resolved_ref], timeout=120)
