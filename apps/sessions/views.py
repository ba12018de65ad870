from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.builds.views import PHASES as BUILD_PHASES
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


@never_cache
def launch_page(request: HttpRequest, provider: str, spec: str) -> HttpResponse:
    """/v2/<provider>/<spec>: GET shows the launch page; its script POSTs here to launch."""
    anonymous = not request.user.is_authenticated
    if anonymous and not settings.BINDERY_ANONYMOUS_LAUNCH:
        return redirect_to_login(request.get_full_path())
    spec = raw_path_spec(request, f"/v2/{provider}/", spec)
    if request.method == "POST":
        params = request.GET
        try:
            urlpath = services.clean_urlpath(
                params.get("urlpath", ""), params.get("labpath", ""), params.get("filepath", "")
            )
            session = services.launch(
                None if anonymous else current_user(request),
                spec=f"{provider}/{spec}",
                urlpath=urlpath,
                anonymous_owner=anonymous_owner(request) if anonymous else "",
            )
        except BinderyError as exc:
            return JsonResponse(exc.as_dict(), status=exc.status)
        return JsonResponse({"session": session.pk, "websocket": f"/ws/launches/{session.pk}/"})
    return render(request, "sessions/launch.html", {
        "spec": f"{provider}/{spec}", "phases": LAUNCH_PHASES, "session": None,
        "query": request.GET.urlencode(),
    })  # fmt: skip


@never_cache
def session_launch(request: HttpRequest, session_id: int) -> HttpResponse:
    """Watch the launch of an existing session (the same page, already started)."""
    user, owner = _owner(request)
    session = selectors.get_session_for_user(user, session_id, owner)
    return render(request, "sessions/launch.html", {
        "spec": f"{session.provider}/{session.spec}", "phases": LAUNCH_PHASES,
        "session": session,
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
