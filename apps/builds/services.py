"""Every change to builds: request, run, cancel, reap, prune old logs.

``request_build`` returns the ready build for a repository version (when its environment
still exists), joins an active one, or creates one and enqueues ``run_build`` after
commit. ``execute_build`` is what the task runs; it is safe to run twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.models import User
from apps.builds.backends.base import BuildRequest, BuildResult, get_builder
from apps.builds.logs import BuildLog, bump_heartbeat, publish_status
from apps.builds.models import Build, BuildLogLine
from apps.builds.redaction import Redactor
from apps.builds.signals import build_finished
from apps.quotas.services import admit_build
from apps.repos.models import Credential
from apps.repos.types import GitCredential, RecordFile, ResolvedRepo
from apps.teams.models import Team
from portal.errors import BackendError, BinderyError, Conflict, PermissionDenied

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 10.0  # seconds between heartbeats of a running build
STALE_AFTER = timedelta(seconds=90)  # a running build silent this long lost its worker
NEVER_STARTED_AFTER = timedelta(minutes=30)
MAX_ATTEMPTS = 3


class BuildNotCancellable(Conflict):
    code = "BUILD_NOT_CANCELLABLE"
    default_message = "This build has already finished."


@dataclass(frozen=True)
class BuildRequested:
    build: Build
    created: bool


# --- (de)serialising the plain dataclasses stored on the row -------------------------------


def resolved_to_json(resolved: ResolvedRepo) -> dict[str, Any]:
    return dataclasses.asdict(resolved)


def resolved_from_json(data: dict[str, Any]) -> ResolvedRepo:
    fields = {f.name for f in dataclasses.fields(ResolvedRepo)}
    values = {k: v for k, v in data.items() if k in fields}
    values["files"] = tuple(RecordFile(**f) for f in data.get("files", ()))
    return ResolvedRepo(**values)


def result_to_json(result: BuildResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_json(data: dict[str, Any]) -> BuildResult:
    fields = {f.name for f in dataclasses.fields(BuildResult)}
    values = {k: v for k, v in data.items() if k in fields}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return BuildResult(**values)


def build_key_for(resolved: ResolvedRepo, scope: str) -> str:
    raw = f"{resolved.provider}\n{resolved.repo_url}\n{resolved.resolved_ref}\n{scope}"
    return hashlib.sha256(raw.encode()).hexdigest()


def scope_for(credential: Credential | None) -> str:
    """Private builds are scoped to the credential that could read the repository."""
    return f"credential-{credential.pk}" if credential is not None else ""


# --- requesting -----------------------------------------------------------------------------


def resolve_input(
    user: User | None,
    *,
    spec: str = "",
    repo_url: str = "",
    ref: str = "HEAD",
    team: Team | None = None,
) -> tuple[ResolvedRepo, Credential | None]:
    """Resolve a ``provider/spec`` or a repository URL + ref for ``user``; also return the
    credential the repository needs (None for a public one). Raises the repos errors."""
    from apps.repos import services as repos

    if spec:
        provider, _, rest = spec.strip().partition("/")
        resolved = repos.resolve(provider, rest, user, team=team)
    else:
        resolved = repos.resolve_url(repo_url, ref or "HEAD", user, team=team)
    return resolved, repos.credential_used(resolved, user, team=team)


def build_from_input(
    user: User, *, spec: str = "", repo_url: str = "", ref: str = "HEAD", team: str = ""
) -> BuildRequested:
    """Resolve and request a build (the API's POST /builds/)."""
    team_obj = _team_for(user, team)
    resolved, credential = resolve_input(user, spec=spec, repo_url=repo_url, ref=ref, team=team_obj)
    return request_build(resolved, user, team=team_obj, credential=credential)


def build_from_text(user: User, text: str, ref: str = "") -> BuildRequested:
    """Resolve what a person pasted (URL, DOI or spec) and request a build."""
    from apps.repos.services import parse_repo_input

    provider, spec = parse_repo_input(text, ref)
    return build_from_input(user, spec=f"{provider}/{spec}")


def _team_for(user: User, slug: str) -> Team | None:
    if not slug:
        return None
    from apps.teams.selectors import get_membership_for_user

    return get_membership_for_user(user, slug).team


def _environment_still_there(build: Build) -> bool:
    """Whether the ready build's environment can be used. A builder that cannot even be
    made here (a misconfigured kubernetes backend: K8S_MISCONFIGURED) answers False: a new
    build is requested, and the worker fails it with the builder's own code and message,
    which the launch then shows, instead of the request raising out of the view."""
    if not build.result:
        return False
    try:
        return get_builder().environment_exists(result_from_json(build.result))
    except (TypeError, ValueError):
        return False
    except BackendError as exc:
        log.warning("cannot check the environment of build %s: %s (%s)", build.pk, exc, exc.code)
        return False


def ready_build(resolved: ResolvedRepo, credential: Credential | None) -> Build | None:
    """The ready build of ``resolved`` whose environment is still there, or None. Asks the
    builder (for a cluster: the registry): call it outside any transaction that holds locks."""
    key = build_key_for(resolved, scope_for(credential))
    ready = Build.objects.filter(build_key=key, status=Build.Status.READY).first()
    if ready is not None and _environment_still_there(ready):
        return ready
    return None


def request_build(
    resolved: ResolvedRepo,
    user: User | None,
    *,
    team: Team | None = None,
    credential: Credential | None = None,
    checked: Build | None = None,
) -> BuildRequested:
    """Return a usable build of ``resolved``: ready, active, or new (enqueued on commit).

    ``checked`` is a ready build whose environment ``ready_build`` found present before
    the caller's transaction: still ready, it is returned without asking the builder
    again (that may be a registry call, not to be made while admission holds locks).

    ``credential`` is the credential the repository needs (None for public ones); it
    scopes the build so that no one who could not use it is handed its environment.
    Safe to call concurrently: two requests for the same version give one build.
    """
    scope = scope_for(credential)
    key = build_key_for(resolved, scope)
    if (
        checked is not None
        and checked.build_key == key
        and Build.objects.filter(pk=checked.pk, status=Build.Status.READY).exists()
    ):
        return BuildRequested(checked, created=False)
    ready = ready_build(resolved, credential)
    if ready is not None:
        return BuildRequested(ready, created=False)
    active = Build.objects.filter(build_key=key, status__in=Build.ACTIVE).first()
    if active is not None:
        return BuildRequested(active, created=False)
    try:
        with transaction.atomic():
            admit_build(user, team)
            build = Build.objects.create(
                provider=resolved.provider,
                spec=resolved.spec[:1000],
                repo_url=resolved.repo_url[:1000],
                repo_slug=resolved.slug,
                display_name=resolved.display_name[:300],
                resolved_ref=resolved.resolved_ref[:200],
                resolved=resolved_to_json(resolved),
                build_key=key,
                scope=scope,
                credential=credential,
                requested_by=user if user is not None and user.is_authenticated else None,
                team=team,
            )
            transaction.on_commit(lambda: enqueue_build(build.pk))
    except IntegrityError:
        # Someone created the active build for this key between our read and our insert.
        active = Build.objects.filter(build_key=key, status__in=Build.ACTIVE).first()
        if active is None:
            raise
        return BuildRequested(active, created=False)
    return BuildRequested(build, created=True)


def enqueue_build(build_id: int) -> None:
    from apps.builds.tasks import run_build

    try:
        run_build.delay(build_id)
    except Exception as exc:
        log.exception("could not enqueue build %s", build_id)
        fail_build(
            build_id,
            "The build could not be queued: the task queue is unavailable. Try again shortly.",
            code="QUEUE_UNAVAILABLE",
            detail=str(exc),
        )


@transaction.atomic
def cancel_build(user: User, build: Build) -> Build:
    """Cancel a pending build at once, or ask a running one to stop (within a second)."""
    if build.requested_by_id != user.pk and not user.is_staff:
        raise PermissionDenied("Only the person who started this build can cancel it.")
    build = Build.objects.select_for_update().get(pk=build.pk)
    if build.is_terminal:
        raise BuildNotCancellable()
    if build.status == Build.Status.PENDING:
        _finish(build, Build.Status.CANCELLED, "The build was cancelled.", "BUILD_CANCELLED")
    else:
        build.cancel_requested = True
        build.save(update_fields=["cancel_requested"])
    return build


# --- running --------------------------------------------------------------------------------


def _finish(build: Build, status: str, message: str = "", code: str = "", detail: str = "") -> None:
    build.status = status
    build.phase = Build.Phase.BUILT if status == Build.Status.READY else Build.Phase.FAILED
    build.error_message, build.error_code, build.error = message, code, detail
    build.finished_at = timezone.now()
    build.save(
        update_fields=["status", "phase", "error_message", "error_code", "error", "finished_at"]
    )
    transaction.on_commit(lambda: _announce(build))


def _announce(build: Build) -> None:
    publish_status(build)
    build_finished.send(sender=Build, build_id=build.pk, status=build.status)


def fail_build(build_id: int, message: str, *, code: str, detail: str = "") -> None:
    with transaction.atomic():
        build = Build.objects.select_for_update().filter(pk=build_id).first()
        if build is not None and not build.is_terminal:
            _finish(build, Build.Status.FAILED, message, code, detail)


def _claim(build_id: int, worker: str) -> Build | None:
    now = timezone.now()
    claimed = Build.objects.filter(pk=build_id, status__in=Build.ACTIVE).update(
        status=Build.Status.RUNNING,
        worker=worker[:200],
        heartbeat_at=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    build = Build.objects.get(pk=build_id)
    if build.started_at is None:
        build.started_at = now
        build.save(update_fields=["started_at"])
    return build


def _credentials(build: Build) -> tuple[GitCredential, ...]:
    from apps.repos.services import load_git_credential

    if build.credential_id is None:
        if build.scope:  # a private build whose credential was deleted since
            from apps.repos.errors import CredentialGone

            raise CredentialGone()
        return ()
    return (load_git_credential(build.credential_id),)


class _Watcher(threading.Thread):
    """Keeps the build's heartbeat fresh and turns a cancel request into the event."""

    def __init__(self, build_id: int, cancel: threading.Event):
        super().__init__(daemon=True, name=f"watch-build-{build_id}")
        self.build_id, self.cancel, self.done = build_id, cancel, threading.Event()

    def run(self) -> None:
        from django.db import connection

        last_beat = 0.0
        try:
            while not self.done.wait(1.0):
                if Build.objects.filter(pk=self.build_id, cancel_requested=True).exists():
                    self.cancel.set()
                last_beat += 1.0
                if last_beat >= HEARTBEAT_EVERY:
                    bump_heartbeat(self.build_id)
                    last_beat = 0.0
        finally:
            connection.close()


class TransientBuildError(Exception):
    """The build failed for a reason that may pass; the task retries it."""


def execute_build(build_id: int, *, worker: str = "worker") -> str | None:
    """Run the build ``build_id`` to its end; returns its final status.

    Returns None when the row is gone or already final (safe to run twice, e.g. after a
    redelivered task). Raises TransientBuildError when a retry may succeed.
    """
    build = _claim(build_id, worker)
    if build is None:
        return None
    if build.cancel_requested:
        return _set_final(build_id, Build.Status.CANCELLED, "The build was cancelled.",
                          "BUILD_CANCELLED")  # fmt: skip
    publish_status(build)
    try:
        credentials = _credentials(build)
    except BinderyError as exc:  # the credential was deleted or cannot be decrypted
        return _set_final(build_id, Build.Status.FAILED, exc.message, exc.code)
    redactor = Redactor(
        secrets=[c.token for c in credentials], usernames=[c.username for c in credentials]
    )
    sink = BuildLog(build, redactor)
    cancel = threading.Event()
    watcher = _Watcher(build_id, cancel)
    watcher.start()
    request = BuildRequest(
        build_id=build_id,
        repo=resolved_from_json(build.resolved),
        credentials=credentials,
        timeout=float(settings.BINDERY_BUILD_TIMEOUT),
        cancel=cancel,
    )
    try:
        result = get_builder().build(request, sink)
    except BackendError as exc:
        message = redactor(exc.message)
        sink(f"Error: {message}", phase="failed", stream="stderr")
        _close(sink, watcher)
        if exc.code == "BUILD_CANCELLED":
            return _set_final(build_id, Build.Status.CANCELLED, message, exc.code)
        if not exc.permanent and build.attempts < MAX_ATTEMPTS:
            raise TransientBuildError(message) from exc
        return _set_final(build_id, Build.Status.FAILED, message, exc.code)
    except Exception as exc:
        log.exception("build %s crashed", build_id)
        sink("Error: the build failed unexpectedly; the operators have the details.",
             phase="failed", stream="stderr")  # fmt: skip
        _close(sink, watcher)
        return _set_final(
            build_id, Build.Status.FAILED,
            "The build failed unexpectedly. Try again; if it keeps failing, tell the operators.",
            "BUILD_CRASHED", detail=redactor("".join(traceback.format_exception(exc))),
        )  # fmt: skip
    sink(f"Environment ready{' (reused)' if result.reused else ''}.", phase="built")
    _close(sink, watcher)
    with transaction.atomic():
        row = Build.objects.select_for_update().get(pk=build_id)
        if row.is_terminal:  # reaped or cancelled meanwhile: keep that outcome
            return row.status
        row.result = result_to_json(result)
        row.environment_key = result.environment_key
        row.save(update_fields=["result", "environment_key"])
        _finish(row, Build.Status.READY)
    return Build.Status.READY


def _close(sink: BuildLog, watcher: _Watcher) -> None:
    watcher.done.set()
    watcher.join(timeout=5)
    sink.close()


def _set_final(build_id: int, status: str, message: str, code: str, detail: str = "") -> str:
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build_id)
        if not build.is_terminal:
            _finish(build, status, message, code, detail)
        return build.status


def reap_stale_builds(now: datetime | None = None) -> list[int]:
    """Fail builds whose worker is gone (no heartbeat), that never started, or that ran past
    the build timeout. Returns the ids it failed. Safe to run any time, twice."""
    now = now or timezone.now()
    stale = Build.objects.filter(
        Q(status=Build.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
        | Q(status=Build.Status.PENDING, created_at__lt=now - NEVER_STARTED_AFTER)
        | Q(
            status=Build.Status.RUNNING,
            started_at__lt=now - timedelta(seconds=settings.BINDERY_BUILD_TIMEOUT + 120),
        )
    ).values_list("pk", "status")
    reaped = []
    for build_id, status in stale:
        message = (
            "The build never started: no worker picked it up. Try again."
            if status == Build.Status.PENDING
            else "The worker running this build stopped before it finished. Try again."
        )
        fail_build(build_id, message, code="BUILD_LOST")
        reaped.append(build_id)
    return reaped


PRUNE_BATCH = 200  # builds whose lines are deleted in one transaction


def prune_build_logs(now: datetime | None = None, *, days: int | None = None) -> int:
    """Delete the stored log lines of builds that finished more than ``days`` (default
    ``BINDERY_BUILD_LOG_RETENTION_DAYS``) ago; the Build rows stay, with ``log_size`` 0.
    Active builds are never touched. Returns how many lines it deleted. Safe to run any
    time, twice (a second run finds nothing)."""
    now = now or timezone.now()
    keep = settings.BINDERY_BUILD_LOG_RETENTION_DAYS if days is None else days
    cutoff = now - timedelta(days=keep)
    old = Build.objects.filter(status__in=Build.TERMINAL, finished_at__lt=cutoff)
    with_lines = old.filter(log_lines__isnull=False).values_list("pk", flat=True).distinct()
    found = sorted(with_lines)
    deleted = 0
    for start in range(0, len(found), PRUNE_BATCH):
        ids = found[start : start + PRUNE_BATCH]
        with transaction.atomic():
            count, _ = BuildLogLine.objects.filter(build_id__in=ids).delete()
            Build.objects.filter(pk__in=ids).update(log_size=0)
        deleted += count
    old.filter(log_size__gt=0).update(log_size=0)  # rows whose lines were gone already
    return deleted
