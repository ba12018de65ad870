"""The team page's "Running sessions": what owners and admins see of the team's sessions
and the Stop buttons (selectors.team_sessions_for says who may; members' personal sessions
never appear)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.repos.names import name_for
from apps.sessions import selectors, services
from apps.sessions.models import Session
from apps.sessions.views import _memory as memory_label
from apps.teams.models import Membership
from apps.teams.selectors import get_membership_for_user
from portal.api import current_user
from portal.errors import BinderyError


def team_session_rows(actor: Membership) -> list[dict[str, Any]]:
    """The team's active sessions as the team page shows them (owners and admins only:
    raises PermissionDenied for a member)."""
    rows = []
    for session in selectors.team_sessions_for(actor):
        name = name_for(session)
        rows.append({
            "id": session.pk,
            "member": session.user.label if session.user else "—",
            "name": name.label,
            "name_full": name.full,
            "started": naturaltime(session.created_at),
            "status": session.status,
            "status_label": session.get_status_display(),
            "memory": memory_label(session.memory_bytes, services.session_memory_used(session)),
            "stop_url": reverse("team-session-stop", args=[actor.team.slug, session.pk]),
            "stoppable": session.status != Session.Status.STOPPING,
        })  # fmt: skip
    return rows


@require_POST
@login_required
def team_session_stop(request: HttpRequest, slug: str, session_id: int) -> HttpResponse:
    """Stop one of the team's sessions; outsiders 404, members 403 (as the API)."""
    user = current_user(request)
    session = selectors.get_team_session(get_membership_for_user(user, slug), session_id)
    try:
        services.request_stop(session, by=user)
        owner = session.user.label if session.user else "someone"
        messages.success(request, f"Stopping the session of {owner}.")
    except BinderyError as exc:
        messages.error(request, exc.message)
    return redirect("team", slug=slug)


@require_POST
@login_required
def team_sessions_stop_all(request: HttpRequest, slug: str) -> HttpResponse:
    """Stop every active session of the team (each in its own transaction: one that ended
    meanwhile does not keep the others running)."""
    user = current_user(request)
    actor = get_membership_for_user(user, slug)
    stopped = 0
    for session in selectors.team_sessions_for(actor).exclude(status=Session.Status.STOPPING):
        try:
            services.request_stop(session, by=user)
        except services.SessionNotStoppable:
            continue
        stopped += 1
    messages.success(request, f"Stopping {stopped} session{'s' if stopped != 1 else ''}.")
    return redirect("team", slug=slug)
