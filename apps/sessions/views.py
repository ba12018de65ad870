from __future__ import annotations

from copy import copy
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.encoding import iri_to_uri
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.builds.models import Build
from apps.builds.views import PHASES as BUILD_PHASES
from apps.quotas.presentation import dashboard_usage
from apps.quotas.views import launch_preview_for
from apps.repos.names import name_for, name_for_spec
from apps.sessions import owners, selectors, services
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.failures import (
    Failure,
    build_failed_step,
    failure_for,
    phase_states,
    retry_url,
)
from apps.sharing.views import dashboard_environments
from apps.teams.models import Membership, Team
from apps.teams.selectors import get_membership_for_user, memberships_for_user
from apps.workshops.presentation import banner_for_session
from portal.api import current_user
from portal.errors import BinderyError, Conflict
from portal.utils import raw_path_spec

LAUNCH_PHASES = [*BUILD_PHASES[:3], ("launching", "Launching"), ("ready", "Ready")]


def anonymous_owner(request: HttpRequest) -> str:
    return owners.anonymous_owner(request.session)


def _owner(request: HttpRequest) -> tuple[Any, str]:
    if request.user.is_authenticated:
        return request.user, ""
    return request.user, anonymous_owner(request)


# Pages that redirect to a ``next`` they were given: a navigation they bounce to /v2/ is
# same-origin, whoever wrote the ``next``, so it must not count as the portal's own click.
_BOUNCING_PAGES = ("/accounts/", "/admin/")


def _raw_full_path(request: HttpRequest) -> str:
    """This request's path and query as the client sent them, still percent-encoded.

    ``request.get_full_path()`` is built from the decoded path: a git spec's
    ``http%3A%2F%2F…`` would come back as ``http://…`` and no longer parse. The raw path is
    used only when it decodes to this very request's path, so it is always a same-site
    path (it starts with ``/v2/``), never another address."""
    raw = "/v2/" + raw_path_spec(request, "/v2/", "")
    if raw == "/v2/" or unquote(raw) != request.path:
        return request.get_full_path()
    query = request.META.get("QUERY_STRING", "")
    return raw + (f"?{iri_to_uri(query)}" if query else "")


def _clicked_in_the_portal(request: HttpRequest) -> bool:
    """Whether this GET comes from one of the portal's own launch forms or links."""
    if request.headers.get("Sec-Fetch-Site") != "same-origin":
        return False
    referer = urlsplit(request.headers.get("Referer", ""))
    return not referer.path.startswith(_BOUNCING_PAGES)


def _launch_teams(request: HttpRequest) -> list[Membership]:
    """The teams the launch form offers (any role: members launch for their team)."""
    if not request.user.is_authenticated:
        return []
    return list(memberships_for_user(current_user(request)))


def _chosen_team(request: HttpRequest) -> Team | None:
    """The team picked on the form (or ``?team=`` of a retry); NotFound outside it."""
    slug = (request.POST.get("team") or request.GET.get("team") or "").strip()
    if not slug or not request.user.is_authenticated:
        return None
    return get_membership_for_user(current_user(request), slug).team


@never_cache
def launch_page(request: HttpRequest, provider: str, spec: str) -> HttpResponse:
    """/v2/<provider>/<spec>: GET shows what will be launched and a Launch button; the
    button (its script, or the form without one) POSTs here to launch.

    A GET never launches: a link from another site (or from a user server, which is
    same-site but not same-origin) would otherwise run a stranger's code with the visitor's
    volumes mounted. Only a navigation from the portal's own pages (``Sec-Fetch-Site:
    same-origin``, which no other site can send) starts at once; everything else waits for
    the click, including a link that came back from signing in (the sign-in page redirects
    to any ``next``, so that navigation is same-origin too). The POST is CSRF-protected as
    every form is.

    Signed out (without anonymous launches), the visitor goes to sign in with ``next`` set
    to the link exactly as it came, still percent-encoded, so it launches the same
    afterwards.

    A refusal (bad input, a repository that cannot be fetched, a quota) is this page again
    with the failure said once, its step marked, and the ways on (partials/error_panel.html);
    the script gets the same failure as JSON.

    One session per repository and ref: when the visitor already runs this one (for the same
    team, or for none), the page says so and offers Open (at the link's urlpath) and Start
    another, and nothing starts by itself; a launch without ``another=1`` (the form's, or the
    query's) is refused with 409 ``SESSION_ALREADY_RUNNING``."""
    anonymous = not request.user.is_authenticated
    here = _raw_full_path(request)
    if anonymous and not settings.BINDERY_ANONYMOUS_LAUNCH:
        return redirect_to_login(here)
    spec = raw_path_spec(request, f"/v2/{provider}/", spec)
    params = request.GET
    wants_page = "text/html" in request.headers.get("Accept", "")
    name = name_for_spec(provider, spec)
    team_slug = (request.POST.get("team") or params.get("team") or "").strip()
    another = "1" in (request.POST.get("another"), params.get("another"))
    failure: Failure | None = None
    running: dict[str, Any] | None = None
    status, urlpath = 200, ""
    try:
        urlpath = services.clean_urlpath(
            params.get("urlpath", ""), params.get("labpath", ""), params.get("filepath", "")
        )
        if request.method == "POST":
            team = _chosen_team(request)
            running = None if another else _running(request, provider, spec, team, urlpath)
            if running is None:
                session = services.launch(
                    None if anonymous else current_user(request),
                    spec=f"{provider}/{spec}",
                    urlpath=urlpath,
                    team=team,
                    anonymous_owner=anonymous_owner(request) if anonymous else "",
                )
        elif not another:
            running = _running(request, provider, spec, _team_if_member(request), urlpath)
    except BinderyError as exc:
        failure = failure_for(exc.code, exc.message, name=name, signed_in=not anonymous,
                              login_next=here, team=team_slug)  # fmt: skip
        status = exc.status
        if request.method == "POST" and not wants_page:
            return JsonResponse({**exc.as_dict(), "failure": failure.as_dict()}, status=exc.status)
    if request.method == "POST" and running is not None:
        if wants_page:  # the form, without script: the page says what runs
            return redirect(here)
        refusal = Conflict("You already run this repository and ref.",
                           code="SESSION_ALREADY_RUNNING", running=running)  # fmt: skip
        return JsonResponse(refusal.as_dict(), status=refusal.status)
    if request.method == "POST" and failure is None:
        if wants_page:  # the form, without script
            return redirect("session-launch", session.pk)
        return JsonResponse({"session": session.pk, "build": session.build_id,
                             "websocket": f"/ws/launches/{session.pk}/"})  # fmt: skip
    # Before launching: what it will use and what is left, or the refusal it would meet
    # (then nothing starts by itself).
    preview = None
    if failure is None and running is None:
        preview = launch_preview_for(request, _team_if_member(request))
    return render(request, "sessions/launch.html", {
        "spec": f"{provider}/{spec}", "provider": provider, "name": name,
        "launch_action": here, "login_next": here, "urlpath": urlpath,
        "steps": phase_states(LAUNCH_PHASES, failure.step if failure else "", bool(failure)),
        "session": None, "anonymous": anonymous, "failure": failure, "running": running,
        "teams": _launch_teams(request), "team": team_slug, "retry_url": retry_url(name, team_slug),
        "preview": preview,
        "launch_config": {"sessionId": None, "query": request.GET.urlencode(),
                          "autostart": failure is None and running is None
                          and not (preview and preview.refused)
                          and _clicked_in_the_portal(request)},
    }, status=status)  # fmt: skip


def _team_if_member(request: HttpRequest) -> Team | None:
    """The ``?team=`` of a GET when the visitor is in it; a GET shows the form whatever the
    slug (the launch's POST is what refuses a team one is not in)."""
    try:
        return _chosen_team(request)
    except BinderyError:
        return None


def _running(
    request: HttpRequest, provider: str, spec: str, team: Team | None, urlpath: str
) -> dict[str, Any] | None:
    """The visitor's session of this repository and ref that runs (or is on its way up), as
    the /v2/ page offers it: Open it (at ``urlpath``, the link's), or Watch its launch."""
    if request.user.is_authenticated:
        user, owner = current_user(request), ""
    else:
        user, owner = None, owners.existing_owner(request.session)
    session = services.find_running_session(user, provider, spec, anonymous_owner=owner, team=team)
    if session is None:
        return None
    ready = session.status == services.Session.Status.READY
    page = reverse("session-launch", args=[session.pk])
    open_url = reverse("session-open", args=[session.pk])
    return {
        "id": session.pk, "status": session.status, "status_label": session.get_status_display(),
        "name": name_for(session).label, "started": naturaltime(session.created_at),
        "urlpath": session.urlpath, "team": session.team.slug if session.team else "",
        "ready": ready, "page": page,
        "open": (open_url + (f"?{urlencode({'urlpath': urlpath})}" if urlpath else ""))
        if ready else page,
    }  # fmt: skip


@never_cache
def session_launch(request: HttpRequest, session_id: int) -> HttpResponse:
    """Watch the launch of an existing session (the same page, already started); an ended
    one says how it ended, once, with the ways on."""
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    name = name_for(session)
    team = session.team.slug if session.team is not None else ""
    failure: Failure | None = None
    if session.status == session.Status.FAILED:
        build_failed = session.build.status in (Build.Status.FAILED, Build.Status.CANCELLED)
        step = build_failed_step(session.build) if build_failed else ""
        failure = failure_for(
            session.error_code or "LAUNCH_FAILED",
            session.error_message or "The launch failed.",
            name=name, signed_in=request.user.is_authenticated, team=team,
            build_id=session.build_id, build_failed=build_failed, step=step,
        )  # fmt: skip
    elif session.status == session.Status.STOPPED:
        failure = Failure(
            title="This session has ended",
            message="It was stopped; your files in persistent/ are kept.",
            code="", step="ready",
            actions=[failure_for("", "", name=name, signed_in=True, team=team).actions[0]],
        )  # fmt: skip
    current = "ready" if session.status == session.Status.READY else ""
    return render(request, "sessions/launch.html", {
        "spec": f"{session.provider}/{session.spec}", "name": name, "session": session,
        "steps": phase_states(LAUNCH_PHASES, failure.step if failure else current,
                              bool(failure) and session.status == session.Status.FAILED),
        "failure": failure,
        "launch_config": {"sessionId": None if failure else session.pk, "autostart": False,
                          "query": "", "logSessionId": session.pk},
        "banner": banner_for_session(session), "on_launch_page": True,  # a workshop's seat
    })  # fmt: skip


@never_cache
@require_GET
def session_open(request: HttpRequest, session_id: int) -> HttpResponse:
    """Send the owner into their server. The server-scoped token goes in the URL once, as
    on mybinder: the server turns it into its own cookie on this first visit.

    ``?urlpath=`` (the Open of a /v2/ link whose repository already runs) opens that path
    instead of the session's own, checked as a launch's is; only on a click in the portal
    (``Sec-Fetch-Site: same-origin``): a link from elsewhere opens the session where it
    was launched, never at a path a stranger picked."""
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    if session.status != session.Status.READY:
        messages.info(request, "This session is not running.")
        return redirect("sessions")
    url = session.url
    if request.GET.get("urlpath") and _clicked_in_the_portal(request):
        at = copy(session)  # the same server, at the path asked for
        at.urlpath = services.clean_urlpath(request.GET["urlpath"])
        url = services.session_url(at)
    separator = "&" if "?" in url else "?"
    target = url + separator + urlencode({"token": services.session_token(session)})
    response = HttpResponseRedirect(target)
    response["Referrer-Policy"] = "no-referrer"
    return response


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _memory(limit: int | None, used: int | None) -> str:
    """Memory as people should read it: "312 MB of 2.0 GB" while the use can be read, else
    "limit 2.0 GB" (the limit is a limit, not what is used)."""
    if used is None:
        return f"limit {filesizeformat(limit)}" if limit else "—"
    return f"{_used(used)} of {filesizeformat(limit)}" if limit else _used(used)


def _used(count: int) -> str:
    """Bytes in use, rounded as people glance at them: whole MB below a GB ("312 MB"), as
    ``filesizeformat`` otherwise; the same no-break space before the unit."""
    mb = round(count / 1024**2)
    if count >= 1024**2 and mb < 1024:
        return f"{mb}\xa0MB"
    return str(filesizeformat(count))


def _session_actions(session: services.Session) -> list[dict[str, str]]:
    """What can be done with a session in its state: Open a ready one (in this tab, as a
    launch does), Watch one on its way up, Stop any that is not already stopping."""
    Status = services.Session.Status
    actions = []
    if session.status == Status.READY:
        actions.append({"kind": "open", "label": "Open",
                        "url": reverse("session-open", args=[session.pk])})  # fmt: skip
    elif session.status in (Status.PENDING, Status.BUILDING, Status.LAUNCHING):
        actions.append({"kind": "watch", "label": "Watch",
                        "url": reverse("session-launch", args=[session.pk])})  # fmt: skip
    if session.status != Status.STOPPING:
        actions.append({"kind": "stop", "label": "Stop",
                        "url": reverse("session-stop", args=[session.pk])})  # fmt: skip
    return actions


def _dashboard_row(session: services.Session) -> dict[str, Any]:
    """One session as the dashboard shows it, in the page and in its JSON (the same dict,
    so what the script redraws is what the server drew)."""
    name = name_for(session)
    data = SessionSerializer(session).data
    return {
        "id": session.pk,
        "status": session.status,
        "status_label": session.get_status_display(),
        "name": name.label,
        "name_full": name.full,
        "team": session.team.name if session.team else "",
        "urlpath": session.urlpath,
        "page": reverse("session-launch", args=[session.pk]),
        "started": naturaltime(session.created_at),
        "ended": naturaltime(session.stopped_at) if session.stopped_at else "",
        "idle": _duration(data["idle_seconds"]),
        "memory": _memory(session.memory_bytes, data["memory_used"]),
        "memory_limit_bytes": session.memory_bytes or None,
        "memory_used_bytes": data["memory_used"],
        "error_message": session.error_message,
        "actions": _session_actions(session),
        "relaunch": f"/v2/{session.provider}/{session.spec}"
        + (f"?{urlencode({'urlpath': session.urlpath})}" if session.urlpath else ""),
        "relaunch_label": "Launch again",
    }


@login_required
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    """Your sessions: the page, or (``?format=json``) the same rows for its script, which
    redraws them in place every few seconds instead of reloading the page."""
    sessions = selectors.sessions_for(request.user).select_related("build", "team")
    running = list(sessions.filter(status__in=services.RELAUNCHABLE))
    active = [_dashboard_row(s) for s in sessions.filter(status__in=services.Session.ACTIVE)]
    recent = []
    for session in sessions.exclude(status__in=services.Session.ACTIVE)[:20]:
        row = _dashboard_row(session)
        # One session per repository and ref: an ended one whose repository runs again
        # offers the running one, not a second identical session.
        key = services.repository_key(session.provider, session.spec)
        again = next((r for r in running if r.team_id == session.team_id
                      and services.repository_key(r.provider, r.spec) == key), None)  # fmt: skip
        if again is not None:
            row["relaunch"] = reverse("session-launch", args=[again.pk])
            row["relaunch_label"] = "Open the running one"
        recent.append(row)
    if request.GET.get("format") == "json":
        return JsonResponse({"active": active, "recent": recent})
    return render(request, "sessions/dashboard.html", {
        "active": active, "recent": recent,
        "team_environments": dashboard_environments(current_user(request)),
        "usage": dashboard_usage(current_user(request)),
    })  # fmt: skip


@require_POST
def session_stop(request: HttpRequest, session_id: int) -> HttpResponse:
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    try:
        services.request_stop(session)
        messages.success(request, "Stopping the session.")
    except BinderyError as exc:
        messages.error(request, exc.message)
    return redirect("sessions" if request.user.is_authenticated else "home")


@login_required
def volumes(request: HttpRequest) -> HttpResponse:
    user = current_user(request)
    services.ensure_volumes(user)
    rows = [services.measure_volume(v) for v in selectors.volumes_for(user)]
    in_use = {v.pk: selectors.volume_in_use(v) for v in rows}
    return render(request, "sessions/volumes.html", {
        "volumes": rows, "in_use": in_use, "offer": services.volume_offer(),
    })  # fmt: skip


@require_POST
@login_required
def volume_delete(request: HttpRequest, volume_id: int) -> HttpResponse:
    volume = selectors.get_volume_for_user(request.user, volume_id)
    try:
        services.delete_volume(current_user(request), volume, request.POST.get("confirm", ""))
        messages.success(request, f"Volume “{volume.label}” deleted.")
    except BinderyError as exc:
        messages.error(request, exc.message)
    return redirect("volumes")


def _check_launchable(provider: str, spec: str) -> None:
    """What the launch will refuse before contacting anything, checked for the preview: the
    spec's syntax, the ban and allow lists, and the host (a private or local address). Raises
    the same errors the launch would."""
    from apps.repos.providers import get_provider
    from apps.repos.services import check_spec_allowed
    from apps.repos.validation import check_host, parse_http_url

    parsed = get_provider(provider).parse(spec)
    check_spec_allowed(provider, spec, parsed.canonical)
    if parsed.values.get("url"):
        check_host(parse_http_url(str(parsed.values["url"])))


def _running_for_preview(
    request: HttpRequest, provider: str, spec: str, urlpath: str = ""
) -> dict[str, str] | None:
    if request.user.is_authenticated:
        user, owner = current_user(request), ""
    else:
        user, owner = None, owners.existing_owner(request.session)
    session = services.find_running_session(user, provider, spec, anonymous_owner=owner)
    if session is None:
        return None
    return {
        "id": str(session.pk), "status": session.get_status_display(),
        "name": name_for(session).label, "page": reverse("session-launch", args=[session.pk]),
        "open": reverse("session-open", args=[session.pk])
        + (f"?{urlencode({'urlpath': urlpath})}" if urlpath else "")
        if session.status == services.Session.Status.READY else "",
    }  # fmt: skip


@require_GET
def launch_link(request: HttpRequest) -> JsonResponse:
    """What the launch form shows as you type: the repository's name, the shareable link and
    the badges (Markdown, reStructuredText, URL), or why it cannot be launched here (no link
    nor badge then: ``refused``), and the visitor's session of it already running."""
    from apps.repos.services import parse_repo_input

    text = request.GET.get("repository", "").strip()
    if not text:
        return JsonResponse({"error": "EMPTY", "detail": "Paste a repository URL or a DOI."},
                            status=400)  # fmt: skip
    try:
        provider, spec = parse_repo_input(text, request.GET.get("ref", "").strip())
        _check_launchable(provider, spec)
        path = request.GET.get("path", "").strip()
        kind = request.GET.get("pathtype", "file")
        query = urlpath = ""
        if path:
            key = "urlpath" if kind == "url" else "labpath"
            urlpath = services.clean_urlpath(**{key: path})
            query = "?" + urlencode({key: path})
    except BinderyError as exc:
        return JsonResponse({**exc.as_dict(), "refused": exc.status == 403}, status=exc.status)
    link = f"{settings.SITE_URL}/v2/{provider}/{spec}{query}"
    badge = f"{settings.SITE_URL}/badge_logo.svg"
    name = name_for_spec(provider, spec)
    return JsonResponse({
        "provider": provider, "spec": f"{provider}/{spec}", "link": link,
        "name": name.label, "name_full": name.full,
        "launch_path": f"/v2/{provider}/{spec}{query}",
        "markdown": f"[![Binder]({badge})]({link})",
        "rst": f".. image:: {badge}\n   :target: {link}",
        "url": link,
        "signed_in": request.user.is_authenticated,
        "running": _running_for_preview(request, provider, spec, urlpath),
    })  # fmt: skip
