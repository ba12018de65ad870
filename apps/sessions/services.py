"""Every change to sessions and volumes: launch, start on the hub, stop, cull, reconcile.

The launch, as DESIGN.md describes it: resolve the repository, admit against the quota,
request the build, and — when the build is ready — start a named server on the hub with
signed options, relay its progress, mint a server-scoped token and announce ``ready``.
Nothing waits on a build while holding a worker: a finished build starts the sessions
waiting for it (``builds.signals.build_finished``).
"""

from __future__ import annotations

import logging
import posixpath
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.builds.backends.base import get_builder
from apps.builds.models import Build
from apps.builds.services import (
    BuildRequested,
    ready_build,
    request_build,
    resolve_input,
    result_from_json,
)
from apps.quotas.services import admit
from apps.repos.names import name_for_resolved
from apps.sessions import hub as hubapi
from apps.sessions.backends import get_session_backend
from apps.sessions.backends.base import Mount, ServerSpec, SizeKind, VolumeRef
from apps.sessions.events import add_event
from apps.sessions.models import Session, Volume
from apps.sessions.signals import session_ready
from apps.teams.models import Team
from portal import crypto
from portal.errors import BackendError, BinderyError, Conflict, InvalidInput

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT = 120.0  # seconds from "start the server" to ready
STOP_TIMEOUT = 30.0
LAUNCHING_GRACE = timedelta(minutes=3)  # a launch older than this without a server is lost
_URLPATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/%?#-]*$")


class SessionNotStoppable(Conflict):
    code = "SESSION_NOT_STOPPABLE"
    default_message = "This session has already ended."


class LaunchFailed(BinderyError):
    status = 502
    code = "LAUNCH_FAILED"


# --- inputs ---------------------------------------------------------------------------------


def clean_urlpath(urlpath: str = "", labpath: str = "", filepath: str = "") -> str:
    """The path to open in the server, as mybinder's urlpath/labpath/filepath, in a
    canonical form: the path part percent-decoded until stable and quoted once again, the
    query and fragment as given.

    Raises InvalidInput (URLPATH_INVALID) for anything that could leave
    ``/user/<hub user>/<server>/`` however many times it is decoded (browsers resolve
    ``%2e%2e``; a server may decode once more): a scheme, ``//``, ``.`` or ``..`` segments,
    backslashes, control characters, an encoding that does not settle.
    """
    if urlpath:
        path = urlpath
    elif labpath:
        path = "lab/tree/" + labpath.lstrip("/")
    elif filepath:
        path = "lab/tree/" + filepath.lstrip("/")
    else:
        return ""
    path = path.lstrip("/")
    if len(path) > 1000 or not _URLPATH.match(path):
        raise _urlpath_invalid()
    split = re.match(r"^([^?#]*)(.*)$", path, re.DOTALL)
    assert split is not None  # the pattern matches every string
    raw_path, rest = split.groups()
    decoded = _unquote_until_stable(raw_path)
    decoded_rest = _unquote_until_stable(rest)
    if decoded is None or decoded_rest is None:
        raise _urlpath_invalid()
    if (
        any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded + decoded_rest)
        or "\\" in decoded + decoded_rest
        or decoded.startswith("/")
        or "//" in decoded
        or any(segment in ("..", ".") for segment in decoded.split("/"))
        or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", decoded)
        or not _stays_inside("/user/u/s/", decoded)
    ):
        raise _urlpath_invalid()
    return quote(decoded, safe="/!$&'()*+,;=:@~") + rest


def _urlpath_invalid() -> InvalidInput:
    return InvalidInput(
        "The path to open must be a plain path inside the server, such as lab/tree/a.ipynb.",
        code="URLPATH_INVALID",
    )


def _unquote_until_stable(text: str, rounds: int = 8) -> str | None:
    """``text`` percent-decoded until decoding changes nothing; None if it never settles."""
    for _ in range(rounds):
        try:
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            return None
        if decoded == text:
            return text
        text = decoded
    return None


def _stays_inside(prefix: str, path: str) -> bool:
    """Whether ``prefix + path``, resolved as a browser would, is still under ``prefix``."""
    resolved = posixpath.normpath(prefix + path)
    return (resolved + "/").startswith(prefix)


# A server started ahead of its owner (a workshop's warm seat w<workshop>-…, a hot server
# h<build>-…) has a hub user of its own, removed with the server; users are u<id>,
# visitors anon-<owner>.
WARM_HUB_USER = re.compile(r"[wh][0-9]+-[0-9a-f]{8}")


def warm_hub_user(workshop_id: int) -> str:
    return f"w{workshop_id}-{secrets.token_hex(4)}"


def hot_hub_user(build_id: int) -> str:
    return f"h{build_id}-{secrets.token_hex(4)}"


def _forget_warm_user(client: hubapi.HubClient, session: Session) -> None:
    if not WARM_HUB_USER.fullmatch(session.hub_user):
        return
    try:
        client.delete_user(session.hub_user)
    except (hubapi.HubError, hubapi.HubUnavailable) as exc:
        log.info("hub user %s of session %s not removed: %s", session.hub_user, session.pk, exc)


def hub_user_for(user: User | None, anonymous_owner: str = "") -> str:
    if user is not None:
        return user.hub_name
    return f"anon-{anonymous_owner[:16]}"


# --- launching ------------------------------------------------------------------------------


def launch(
    user: User | None,
    *,
    spec: str = "",
    repo_url: str = "",
    ref: str = "HEAD",
    urlpath: str = "",
    team: Team | None = None,
    anonymous_owner: str = "",
    cpu: float | None = None,
    memory_bytes: int | None = None,
) -> Session:
    """Start a session for a repository. Returns at once: the session is building or
    launching; follow its events. Raises the repos errors for bad or forbidden input,
    QuotaExceeded (429) before any work starts.

    ``cpu`` (cores) and ``memory_bytes`` ask for a size within the quota (None: the
    quota's limit); a team launch counts against the team's pool and the member's cap."""
    resolved, credential = resolve_input(user, spec=spec, repo_url=repo_url, ref=ref, team=team)
    checked = ready_build(resolved, credential)  # before the locks: it may ask a registry
    with transaction.atomic():
        admission = admit(user, team, anonymous_owner=anonymous_owner, cpu=cpu,
                          memory_bytes=memory_bytes)  # fmt: skip
        requested: BuildRequested = request_build(
            resolved, user, team=team, credential=credential, checked=checked
        )
        if user is None and team is None:  # a visitor's launch mounts nothing: a hot server?
            from apps.sessions import hot

            taken = hot.take(requested.build, admission, anonymous_owner=anonymous_owner,
                             urlpath=urlpath)  # fmt: skip
            if taken is not None:
                return taken
        session = open_session(
            requested.build, user=user, anonymous_owner=anonymous_owner if user is None else "",
            team=team, hub_user=hub_user_for(user, anonymous_owner), urlpath=urlpath,
            memory_bytes=admission.memory_bytes, max_processes=admission.max_processes,
            cpu=admission.cpu,
        )  # fmt: skip
    return session


def open_session(
    build: Build,
    *,
    user: User | None,
    anonymous_owner: str,
    team: Team | None,
    hub_user: str,
    urlpath: str,
    memory_bytes: int,
    max_processes: int,
    cpu: float | None,
    workshop_id: int | None = None,
    spare: bool = False,
) -> Session:
    """The session row of an admitted launch, in the caller's transaction: launching now
    (the server starts on commit) when ``build`` is ready, else waiting for it. ``spare``:
    a hot server, started for whoever launches the environment next (apps.sessions.hot)."""
    ready = build.status == Build.Status.READY
    session = Session.objects.create(
        user=user,
        anonymous_owner=anonymous_owner,
        team=team,
        build=build,
        hub_user=hub_user,
        provider=build.provider,
        spec=build.spec[:1000],
        urlpath=urlpath,
        status=Session.Status.LAUNCHING if ready else Session.Status.BUILDING,
        memory_bytes=memory_bytes,
        max_processes=max_processes,
        cpu=cpu,
        environment_key=build.environment_key,
        workshop_id=workshop_id,
        spare=spare,
    )
    label = name_for_resolved(build.resolved).label
    if ready:
        add_event(session, "built",
                  f"Reusing the environment built for {label}; starting your server.")  # fmt: skip
        transaction.on_commit(partial(_enqueue_launch, session.pk))
    else:
        add_event(session, "waiting", f"Waiting for the build of {label}.")
        # The build may finish before this commits: look again once it has.
        transaction.on_commit(partial(start_sessions_waiting_for, build.pk))
    return session


def _enqueue_launch(session_id: int) -> None:
    from apps.sessions.tasks import launch_session

    try:
        launch_session.delay(session_id)
    except Exception as exc:
        log.exception("could not enqueue launch of session %s", session_id)
        fail_session(session_id, "The launch could not be queued. Try again shortly.",
                     code="QUEUE_UNAVAILABLE", detail=str(exc))  # fmt: skip


def start_sessions_waiting_for(build_id: int) -> list[int]:
    """Move the sessions waiting for a finished build on: launch them, or fail them with
    the build's error. Safe to run twice."""
    build = Build.objects.filter(pk=build_id).first()
    if build is None or not build.is_terminal:
        return []
    moved = []
    for session in Session.objects.filter(build_id=build_id, status=Session.Status.BUILDING):
        with transaction.atomic():
            updated = Session.objects.filter(pk=session.pk, status=Session.Status.BUILDING).update(
                status=Session.Status.LAUNCHING
                if build.status == Build.Status.READY
                else Session.Status.FAILED,
                environment_key=build.environment_key,
            )
            if not updated:
                continue
            session.refresh_from_db()
            if build.status == Build.Status.READY:
                add_event(session, "built", "The environment is built; starting your server.")
                transaction.on_commit(partial(_enqueue_launch, session.pk))
            else:
                message = build.error_message or f"The build was {build.status}."
                _fail(
                    session, f"The build failed: {message}", code=build.error_code or "BUILD_FAILED"
                )
        moved.append(session.pk)
    return moved


def server_spec(session: Session) -> ServerSpec:
    """What the session's server runs, backend-neutral: its environment, volumes (the
    owner's home, the team's for a team launch), limits and the mybinder variables."""
    build = session.build
    result = result_from_json(build.result or {})
    resolved = build.resolved
    mounts: list[Mount] = []
    # A workshop's seat mounts the attendee's own volume only when the workshop says so.
    seat_without_volume = session.workshop is not None and not session.workshop.mount_volumes
    if session.user is not None and not seat_without_volume:
        mounts.append(Mount(volume_ref(home_volume(session.user), limited=True), "persistent"))
    if session.team is not None:
        mounts.append(
            Mount(volume_ref(team_volume(session.team), limited=True),
                  f"persistent/teams/{session.team.slug}")
        )  # fmt: skip
    return ServerSpec(
        session_id=session.pk,
        hub_user=session.hub_user,
        server_name=session.server_name,
        environment=result.environment_path,
        checkout=result.checkout_path,
        start_script=result.start_script,
        mounts=tuple(mounts),
        memory_bytes=session.memory_bytes,
        cpu=session.cpu,
        max_processes=session.max_processes,
        owner_user_id=session.user.pk if session.user is not None else None,
        anonymous_owner=session.anonymous_owner,
        team_id=session.team.pk if session.team is not None else None,
        default_url="/" + session.urlpath.split("?", 1)[0] if session.urlpath else "",
        binder=(
            ("binder_repo_url", resolved["repo_url"]),
            ("binder_ref_url", resolved["ref_url"]),
            ("binder_launch_host", settings.SITE_URL + "/"),
            ("binder_request", f"v2/{resolved['provider']}/{resolved['spec']}"),
            ("binder_persistent_request", f"v2/{resolved['persistent_spec']}"),
        ),
    )


def start_on_hub(session_id: int) -> str | None:
    """Start the session's server and follow it to ready (the task's body).

    Returns the final status, or None when there was nothing to do (safe to run twice).
    """
    claimed = Session.objects.filter(
        pk=session_id, status=Session.Status.LAUNCHING, launch_started_at__isnull=True
    ).update(launch_started_at=timezone.now())
    if not claimed:
        return None
    session = Session.objects.select_related("build", "team", "user", "workshop").get(pk=session_id)
    if session.build.result:
        _mark_used(session.build.pk, session.build.result)
    client = hubapi.HubClient()
    try:
        client.ensure_user(session.hub_user)
        options = get_session_backend().launch_options(server_spec(session))
        client.start_server(session.hub_user, session.server_name, options)
        add_event(session, "launching", "Starting your server.")
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        for event in client.iter_progress(session.hub_user, session.server_name):
            message = str(event.get("message") or "").strip()
            if event.get("ready"):
                break  # its "Server ready at <url>" would repeat the ready event below
            if message:
                add_event(session, "launching", message)
            if event.get("failed"):
                raise LaunchFailed(message or "The server failed to start.")
            if time.monotonic() > deadline:
                raise LaunchFailed(
                    "The server did not become ready in time.", code="LAUNCH_TIMEOUT"
                )
        if client.server_status(session.hub_user, session.server_name) != "ready":
            raise LaunchFailed("The server stopped while starting.")
        token, token_id = client.create_server_token(
            session.hub_user, session.server_name, expires_in=_token_lifetime(session)
        )
    except BinderyError as exc:
        _cleanup_failed_launch(client, session)
        fail_session(session.pk, exc.message, code=exc.code)
        return Session.Status.FAILED
    with transaction.atomic():
        row = Session.objects.select_for_update().get(pk=session_id)
        if row.status != Session.Status.LAUNCHING:  # stopped while launching
            client.revoke_token(session.hub_user, token_id)
            return row.status
        row.url = session_url(row)
        row.token_encrypted = crypto.encrypt(token)
        row.token_id = str(token_id)
        row.status = Session.Status.READY
        row.ready_at = row.last_activity = timezone.now()
        row.save(update_fields=["url", "token_encrypted", "token_id", "status", "ready_at",
                                "last_activity"])  # fmt: skip
        add_event(row, "ready", "Your server is ready; opening it.")
        transaction.on_commit(partial(session_ready.send, sender=Session, session_id=row.pk))
    return Session.Status.READY


def _token_lifetime(session: Session) -> int:
    """Seconds the server's token lives: the longest the session may, and an hour. A
    workshop's server may wait up to BINDERY_WORKSHOP_WARM_RECYCLE for its attendee first, a
    hot server BINDERY_HOT_IDLE for its visitor (its age then counts from the handover)."""
    wait = (
        settings.BINDERY_WORKSHOP_WARM_RECYCLE if session.workshop_id
        else settings.BINDERY_HOT_IDLE if session.spare else 0
    )  # fmt: skip
    return settings.BINDERY_MAX_AGE + wait + 3600


def _mark_used(build_id: int, result: dict[str, Any]) -> None:
    """Tell the builder a session starts from ``build``'s environment (least recently used
    pruning). Bookkeeping only: a builder that cannot be made here (a misconfigured
    kubernetes backend, K8S_MISCONFIGURED) is logged, and the launch goes on; the session
    backend says for itself whether it can start the server."""
    try:
        get_builder().mark_used(result_from_json(result))
    except BackendError as exc:
        log.warning("could not mark build %s's environment used: %s (%s)", build_id, exc, exc.code)


def session_url(session: Session) -> str:
    """The URL of the session's server with its urlpath: on the hub's public URL, or on the
    hub user's own subdomain with ``BINDERY_HUB_SUBDOMAIN_HOST`` (as JupyterHub names it).

    Raises InvalidInput (URLPATH_INVALID) unless the result stays inside
    ``/user/<hub user>/<server>/`` of that host, decoded any number of times."""
    prefix = f"/user/{quote(session.hub_user, safe='')}/{quote(session.server_name, safe='')}/"
    host = settings.BINDERY_HUB_URL
    if settings.BINDERY_HUB_SUBDOMAIN_HOST:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", session.hub_user):
            raise InvalidInput("This hub user name cannot be a host name.", code="HUB_USER_INVALID")
        parts = urlsplit(settings.BINDERY_HUB_SUBDOMAIN_HOST)
        host = f"{parts.scheme}://{session.hub_user}.{parts.netloc}"
    base = host.rstrip("/") + prefix
    url = base + session.urlpath
    parts, expected = urlsplit(url), urlsplit(base)
    decoded = _unquote_until_stable(parts.path)
    if (
        (parts.scheme, parts.netloc) != (expected.scheme, expected.netloc)
        or decoded is None
        or not decoded.startswith(expected.path)
        or not _stays_inside(expected.path, decoded.removeprefix(expected.path))
    ):
        raise _urlpath_invalid()
    return url


def session_token(session: Session) -> str:
    return crypto.decrypt(session.token_encrypted) if session.token_encrypted else ""


def _cleanup_failed_launch(client: hubapi.HubClient, session: Session) -> None:
    try:
        client.stop_server(session.hub_user, session.server_name, remove=True)
    except BinderyError as exc:
        log.warning("could not stop the failed server of session %s: %s", session.pk, exc)
    get_session_backend().release(session.pk, session.server_name)


def _fail(session: Session, message: str, *, code: str, detail: str = "") -> None:
    session.status = Session.Status.FAILED
    session.error_message, session.error_code, session.error = message, code, detail
    session.stopped_at = timezone.now()
    session.save(update_fields=["status", "error_message", "error_code", "error", "stopped_at"])
    add_event(session, "failed", message)
    transaction.on_commit(partial(_account_end, session.pk))


def fail_session(session_id: int, message: str, *, code: str, detail: str = "") -> None:
    with transaction.atomic():
        session = Session.objects.select_for_update().filter(pk=session_id).first()
        if session is not None and not session.is_terminal:
            _fail(session, message, code=code, detail=detail)


# --- stopping -------------------------------------------------------------------------------


def request_stop(
    session: Session, reason: str = "Stopped by its owner.", *, by: User | None = None
) -> Session:
    """Ask for a session to stop. Pending/building sessions end at once; running ones are
    stopped on the hub by a task. Raises SessionNotStoppable for an ended session.

    ``by`` is who asked when it may be someone other than the owner: a team admin (the
    caller authorized it with ``selectors.get_session_for_stop``); the event names them."""
    if by is not None and by.pk != session.user_id:
        reason = f"Stopped by a team admin ({by.label})."
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session.pk)
        if session.is_terminal:
            raise SessionNotStoppable()
        if session.status in (Session.Status.PENDING, Session.Status.BUILDING):
            session.status = Session.Status.STOPPED
            session.stopped_at = timezone.now()
            session.save(update_fields=["status", "stopped_at"])
            add_event(session, "stopped", reason)
            return session
        if session.status != Session.Status.STOPPING:
            session.status = Session.Status.STOPPING
            session.save(update_fields=["status"])
            add_event(session, "stopping", reason)
        transaction.on_commit(lambda: _enqueue_stop(session.pk))
    return session


def _enqueue_stop(session_id: int) -> None:
    from apps.sessions.tasks import stop_session

    try:
        stop_session.delay(session_id)
    except Exception:
        log.exception("could not enqueue stop of session %s; reconcile will retry", session_id)


def stop_on_hub(session_id: int) -> str | None:
    """Stop the server, revoke its token, remove the working copy; safe to run twice.

    Raises HubUnavailable when the hub is down: the session stays ``stopping`` and the
    task (or reconcile) tries again — nothing is marked stopped by mistake."""
    session = Session.objects.filter(pk=session_id).first()
    if session is None or session.status != Session.Status.STOPPING:
        return None
    client = hubapi.HubClient()
    if not client.stop_server(session.hub_user, session.server_name, remove=True):
        deadline = time.monotonic() + STOP_TIMEOUT
        while client.server_status(session.hub_user, session.server_name) != "stopped":
            if time.monotonic() > deadline:
                raise hubapi.HubUnavailable("The hub is still stopping the server.")
            time.sleep(0.2)  # polling the hub's state, with a deadline
    if session.token_id:
        try:
            client.revoke_token(session.hub_user, session.token_id)
        except hubapi.HubError as exc:
            log.info("token of session %s already gone: %s", session_id, exc)
    _forget_warm_user(client, session)
    _finish_stopped(session_id, "stopped", "The session stopped.")
    return Session.Status.STOPPED


def _finish_stopped(session_id: int, phase: str, message: str) -> None:
    get_session_backend().release(session_id, hubapi.server_name_for(session_id))
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if session.is_terminal:
            return
        session.status = Session.Status.STOPPED
        session.stopped_at = timezone.now()
        session.token_encrypted = ""
        session.save(update_fields=["status", "stopped_at", "token_encrypted"])
        add_event(session, phase, message)
        transaction.on_commit(partial(_account_end, session_id))


def _account_end(session_id: int) -> None:
    """The ledger's last minutes of an ended session and its volumes' sizes (beat catches
    up whatever this misses)."""
    from apps.quotas.ledger import session_ended

    session_ended(session_id)


def keepalive(session: Session) -> Session:
    if session.status not in Session.RUNNING:
        raise SessionNotStoppable(
            "Only a running session can be kept alive.", code="SESSION_NOT_RUNNING"
        )
    session.keepalive_at = timezone.now()
    session.save(update_fields=["keepalive_at"])
    return session


# --- lifecycle: cull and reconcile ----------------------------------------------------------


def refresh_activity(servers: dict[tuple[str, str], hubapi.HubServer]) -> None:
    for (hub_user, server_name), server in servers.items():
        session_id = hubapi.session_id_for(server_name)
        if server["last_activity"] is None or session_id is None:
            continue
        Session.objects.filter(pk=session_id, hub_user=hub_user).update(
            last_activity=server["last_activity"]
        )


def cull_sessions(now: datetime | None = None) -> list[int]:
    """Stop sessions idle longer than BINDERY_IDLE_TIMEOUT (the hub's last_activity, or a
    keepalive) or older than BINDERY_MAX_AGE. Returns the ids asked to stop."""
    now = now or timezone.now()
    try:
        refresh_activity(_servers())
    except hubapi.HubUnavailable:
        log.warning("hub unavailable: culling with the activity we last saw")
    idle = timedelta(seconds=settings.BINDERY_IDLE_TIMEOUT)
    max_age = timedelta(seconds=settings.BINDERY_MAX_AGE)
    stopped = []
    # a workshop's warm server waits for its attendee, a hot server for its visitor: not
    # idle, and the workshop's tending or the hot pool's recycles them
    for session in (
        Session.objects.filter(status=Session.Status.READY, spare=False)
        .exclude(workshop__isnull=False, seat__isnull=True)
    ):  # fmt: skip
        seen = max(t for t in (session.last_activity, session.keepalive_at, session.ready_at) if t)
        if now - (session.handed_over_at or session.created_at) > max_age:
            request_stop(session, "The session reached its maximum age and was stopped.")
        elif now - seen > idle:
            request_stop(session, "The session was idle and was stopped to free its place.")
        else:
            continue
        stopped.append(session.pk)
    return stopped


def _servers() -> dict[tuple[str, str], hubapi.HubServer]:
    return {(s["user"], s["name"]): s for s in hubapi.HubClient().list_servers()}


def reconcile(now: datetime | None = None) -> dict[str, list[Any]]:
    """Make the portal agree with the hub (the truth for what runs).

    Sessions the hub no longer runs become stopped; hub servers the portal does not know
    (or knows as ended) are stopped; stuck stops are retried; sessions waiting on a finished
    build move on. With the hub down nothing is changed."""
    now = now or timezone.now()
    report: dict[str, list[Any]] = {"stopped": [], "orphans": [], "retried": [], "moved": []}
    for build_id in (
        Session.objects.filter(status=Session.Status.BUILDING, build__status__in=Build.TERMINAL)
        .values_list("build_id", flat=True)
        .distinct()
    ):
        report["moved"] += start_sessions_waiting_for(build_id)
    try:
        servers = _servers()
    except hubapi.HubUnavailable:
        log.warning("hub unavailable: nothing reconciled")
        return report
    refresh_activity(servers)
    known: set[tuple[str, str]] = set()
    for session in Session.objects.filter(status__in=Session.ACTIVE):
        key = (session.hub_user, session.server_name)
        known.add(key)
        server = servers.get(key)
        running = server is not None and server["status"] != "stopped"
        if session.status == Session.Status.STOPPING:
            _enqueue_stop(session.pk)
            report["retried"].append(session.pk)
        elif session.status == Session.Status.READY and not running:
            _forget_warm_user(hubapi.HubClient(), session)
            _finish_stopped(
                session.pk, "stopped", "The server stopped on its own (it exited or was killed)."
            )
            report["stopped"].append(session.pk)
        elif (
            session.status == Session.Status.LAUNCHING
            and not running
            and session.launch_started_at is not None
            and now - session.launch_started_at > LAUNCHING_GRACE
        ):
            fail_session(session.pk, "The server never came up.", code="LAUNCH_LOST")
            report["stopped"].append(session.pk)
    for key, server in servers.items():
        if key not in known and server["name"]:
            hubapi.HubClient().stop_server(key[0], key[1], remove=True)
            report["orphans"].append("/".join(key))
    return report


# --- volumes --------------------------------------------------------------------------------


def home_volume(user: User | None) -> Volume:
    assert user is not None
    volume, _ = Volume.objects.get_or_create(user=user)
    return volume


def ensure_volumes(user: User) -> None:
    """Every user has a home volume and sees one volume per team (rows only; directories
    are made when a session first mounts them)."""
    from apps.teams.models import Team as TeamModel

    home_volume(user)
    missing = TeamModel.objects.filter(memberships__user=user, volume__isnull=True)
    for team in missing:
        team_volume(team)


def team_volume(team: Team) -> Volume:
    volume, _ = Volume.objects.get_or_create(team=team)
    return volume


def volume_ref(volume: Volume, *, limited: bool = False) -> VolumeRef:
    """The backend's view of a volume; ``limited`` adds its storage quota (for a mount)."""
    limit = None
    if limited:
        from apps.quotas.services import storage_limit_of

        limit = storage_limit_of(volume)[0]
    return VolumeRef(key=volume.relative_path, user_id=volume.user_id, team_id=volume.team_id,
                     limit_bytes=limit)  # fmt: skip


@dataclass(frozen=True)
class VolumeOffer:
    """What the backend offers for volumes: a .tar.gz download or not, and what a
    volume's ``size_bytes`` is (``used``: its files' bytes; ``capacity``: the size its
    storage allows)."""

    archive: bool
    size_kind: SizeKind


def volume_offer() -> VolumeOffer:
    """The session backend's answer, for pages and the API (no call, no query)."""
    backend = get_session_backend()
    return VolumeOffer(archive=backend.archive_offered, size_kind=backend.size_kind)


def measure_volume(volume: Volume) -> Volume:
    """Store the volume's size, measured now by the backend."""
    volume.size_bytes = get_session_backend().measure_volume(volume_ref(volume))
    volume.size_measured_at = timezone.now()
    volume.save(update_fields=["size_bytes", "size_measured_at"])
    return volume


def measure_volume_use(volume: Volume) -> Volume | None:
    """Store the bytes the volume's files use, where the backend can read them (the usage
    ledger's measurement); None where it cannot (kubernetes), the volume unchanged."""
    used = get_session_backend().used_bytes(volume_ref(volume))
    if used is None:
        return None
    volume.size_bytes = used
    volume.size_measured_at = timezone.now()
    volume.save(update_fields=["size_bytes", "size_measured_at"])
    return volume


def archive_volume(volume: Volume) -> tuple[str, Iterator[bytes]]:
    """(file name stem, .tar.gz stream) of a volume's files; raises ArchiveNotOffered."""
    name = "home" if volume.user_id else f"team-{volume.team.slug if volume.team else ''}"
    return name, get_session_backend().archive_volume(volume_ref(volume), name)


def delete_volume(user: User, volume: Volume, confirm: str) -> None:
    """Delete a volume's contents and row. ``confirm`` must be the volume's label."""
    from apps.sessions.selectors import volume_in_use
    from apps.teams.selectors import get_membership_for_user

    if volume.team_id:
        assert volume.team is not None
        membership = get_membership_for_user(user, volume.team.slug)
        if not membership.can_manage:
            from portal.errors import PermissionDenied

            raise PermissionDenied("Only team owners and admins can delete the team's volume.")
    if confirm.strip() != volume.label:
        raise InvalidInput(f"Type “{volume.label}” to confirm.", code="CONFIRMATION_REQUIRED")
    if volume_in_use(volume):
        raise Conflict("Stop the sessions using this volume first.", code="VOLUME_IN_USE")
    get_session_backend().delete_volume(volume_ref(volume))
    volume.delete()


# --- one session per repository ---------------------------------------------------------------


RELAUNCHABLE = (Session.Status.PENDING, Session.Status.BUILDING, Session.Status.LAUNCHING,
                Session.Status.READY)  # fmt: skip


def repository_key(provider: str, spec: str) -> tuple[str, str]:
    """(provider, canonical spec): two escapings of one repository and ref compare equal."""
    from apps.repos.providers import get_provider

    try:
        return provider, get_provider(provider).parse(spec).canonical
    except BinderyError:
        return provider, spec


def find_running_session(
    user: User | None,
    provider: str,
    spec: str,
    *,
    anonymous_owner: str = "",
    team: Team | None = None,
) -> Session | None:
    """The owner's newest session of this repository and ref that has not ended nor begun
    stopping (for the same team, or for none), or None: a second Launch offers it ("Already
    running: Open / Start another") instead of silently starting an identical session that
    shares ``persistent/``. Reads only; safe to call any time."""
    if user is not None:
        candidates = Session.objects.filter(user=user)
    elif anonymous_owner:
        candidates = Session.objects.filter(user=None, anonymous_owner=anonymous_owner)
    else:
        return None
    wanted = repository_key(provider, spec)
    rows = candidates.filter(provider=provider, status__in=RELAUNCHABLE, team=team)
    for session in rows.select_related("build").order_by("-created_at", "-id"):
        if repository_key(session.provider, session.spec) == wanted:
            return session
    return None


# --- what a running session uses ------------------------------------------------------------


def session_memory_used(session: Session) -> int | None:
    """Bytes the session's server uses now, as its backend reads it (locally: the cgroup's
    working set, see ``apps.cgroups.memory_in_use``), or None when it is not running (only
    ``ready`` sessions are read) or there is nothing to read. No query, no call to the hub:
    cheap enough for every row of a list."""
    if session.status != Session.Status.READY:
        return None
    return get_session_backend().memory_used(session.hub_user, session.server_name)
