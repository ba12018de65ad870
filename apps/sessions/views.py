from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.utils.encoding import iri_to_uri
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.builds.views import PHASES as BUILD_PHASES
from apps.repos.providers import get_provider
from apps.sessions import owners, selectors, services
from apps.sessions.api.serializers import SessionSerializer
from portal.api import current_user
from portal.errors import BinderyError
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


def _readable(provider: str, spec: str) -> str:
    """The repository for people (no network): the decoded URL or project path, and the
    ref; what was given, decoded, when it does not parse (the launch will say why)."""
    try:
        values = get_provider(provider).parse(spec).values
    except BinderyError:
        return unquote(spec)
    names = {
        "gh": f"{values.get('owner')}/{values.get('repo')}",
        "gl": values.get("namespace", ""),
        "gist": f"{values.get('user')}/{values.get('gist_id')}",
        "git": values.get("url", ""),
    }
    if provider not in names:
        return unquote(spec)
    return f"{names[provider]} @ {values['ref']}"


def _clicked_in_the_portal(request: HttpRequest) -> bool:
    """Whether this GET comes from one of the portal's own launch forms or links."""
    if request.headers.get("Sec-Fetch-Site") != "same-origin":
        return False
    referer = urlsplit(request.headers.get("Referer", ""))
    return not referer.path.startswith(_BOUNCING_PAGES)


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
    afterwards."""
    anonymous = not request.user.is_authenticated
    here = _raw_full_path(request)
    if anonymous and not settings.BINDERY_ANONYMOUS_LAUNCH:
        return redirect_to_login(here)
    spec = raw_path_spec(request, f"/v2/{provider}/", spec)
    params = request.GET
    wants_page = "text/html" in request.headers.get("Accept", "")
    try:
        urlpath = services.clean_urlpath(
            params.get("urlpath", ""), params.get("labpath", ""), params.get("filepath", "")
        )
        if request.method == "POST":
            session = services.launch(
                None if anonymous else current_user(request),
                spec=f"{provider}/{spec}",
                urlpath=urlpath,
                anonymous_owner=anonymous_owner(request) if anonymous else "",
            )
    except BinderyError as exc:
        if request.method == "POST" and not wants_page:
            return JsonResponse(exc.as_dict(), status=exc.status)
        raise  # the error page (BinderyErrorMiddleware)
    if request.method == "POST":
        if wants_page:  # the form, without script
            return redirect("session-launch", session.pk)
        return JsonResponse({"session": session.pk, "websocket": f"/ws/launches/{session.pk}/"})
    return render(request, "sessions/launch.html", {
        "spec": f"{provider}/{spec}", "provider": provider,
        "repository": _readable(provider, spec), "launch_action": here, "login_next": here,
        "urlpath": urlpath, "phases": LAUNCH_PHASES, "session": None, "anonymous": anonymous,
        "launch_config": {"sessionId": None, "autostart": _clicked_in_the_portal(request),
                          "query": request.GET.urlencode()},
    })  # fmt: skip


@never_cache
def session_launch(request: HttpRequest, session_id: int) -> HttpResponse:
    """Watch the launch of an existing session (the same page, already started)."""
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    return render(request, "sessions/launch.html", {
        "spec": f"{session.provider}/{session.spec}", "phases": LAUNCH_PHASES,
        "session": session,
        "launch_config": {"sessionId": session.pk, "autostart": False, "query": ""},
    })  # fmt: skip


@never_cache
@require_GET
def session_open(request: HttpRequest, session_id: int) -> HttpResponse:
    """Send the owner into their server. The server-scoped token goes in the URL once, as
    on mybinder: the server turns it into its own cookie on this first visit."""
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    if session.status != session.Status.READY:
        messages.info(request, "This session is not running.")
        return redirect("sessions")
    separator = "&" if "?" in session.url else "?"
    target = session.url + separator + urlencode({"token": services.session_token(session)})
    response = HttpResponseRedirect(target)
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    sessions = selectors.sessions_for(request.user).select_related("build", "team")
    active = [s for s in sessions.filter(status__in=services.Session.ACTIVE)]
    recent = sessions.exclude(status__in=services.Session.ACTIVE)[:20]
    rows = {s.pk: SessionSerializer(s).data for s in active}
    return render(request, "sessions/dashboard.html",
                  {"active": active, "recent": recent, "rows": rows})  # fmt: skip


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
    return render(request, "sessions/volumes.html", {"volumes": rows, "in_use": in_use})


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


@require_GET
def launch_link(request: HttpRequest) -> JsonResponse:
    """What the launch form shows as you type: the spec, the shareable link, the badge."""
    from apps.repos.services import parse_repo_input

    text = request.GET.get("repository", "").strip()
    if not text:
        return JsonResponse({"error": "EMPTY", "detail": "Paste a repository URL or a DOI."},
                            status=400)  # fmt: skip
    try:
        provider, spec = parse_repo_input(text, request.GET.get("ref", "").strip())
        path = request.GET.get("path", "").strip()
        kind = request.GET.get("pathtype", "file")
        query = ""
        if path:
            key = "urlpath" if kind == "url" else "labpath"
            services.clean_urlpath(**{key: path})
            query = "?" + urlencode({key: path})
    except BinderyError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    link = f"{settings.SITE_URL}/v2/{provider}/{spec}{query}"
    badge = f"{settings.SITE_URL}/badge_logo.svg"
    return JsonResponse({
        "provider": provider, "spec": f"{provider}/{spec}", "link": link,
        "launch_path": f"/v2/{provider}/{spec}{query}",
        "markdown": f"[![Binder]({badge})]({link})",
        "rst": f".. image:: {badge}\n :target: {link}",
    })  # fmt: skip
