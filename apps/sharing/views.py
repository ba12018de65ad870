"""Pages: a team's environments (a section of the team page, its forms POST here), the
dashboard's list of them, share links (mine at /s/, one at /s/<token>).

Launching redirects to the session's launch page, as the /v2/ form does after a launch.
A GET never launches: the Launch buttons are CSRF-protected POST forms.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.models import User
from apps.repos.names import name_for_spec
from apps.sharing import selectors, services
from apps.sharing.forms import ShareLinkForm, TeamEnvironmentForm
from apps.sharing.models import ShareLink, TeamEnvironment
from apps.teams.models import Membership
from apps.teams.selectors import get_membership_for_user, memberships_for_user
from portal.api import current_user
from portal.errors import BinderyError, InvalidInput, NotFound

_ISSUED_KEY = "sharing.issued_share_link"


def _environment_row(environment: TeamEnvironment) -> dict[str, Any]:
    name = name_for_spec(environment.provider, environment.spec)
    return {
        "environment": environment,
        "repository": name.label,
        "repository_full": name.full,
        "pinned": "" if environment.follow_branch else environment.resolved_ref[:12],
        "launch_url": reverse(
            "team-environment-launch", args=[environment.team.slug, environment.pk]
        ),
    }


def team_environments_context(me: Membership) -> dict[str, Any]:
    """What ``sharing/_team_environments.html`` needs on the team page."""
    return {
        "rows": [_environment_row(e) for e in selectors.environments_of(me)],
        "form": TeamEnvironmentForm() if me.can_manage else None,
    }


def dashboard_environments(user: User) -> list[dict[str, Any]]:
    """The environments of the user's teams, for ``sharing/_dashboard_environments.html``."""
    return [_environment_row(e) for e in selectors.environments_for_user(user)]


# --- team environments ----------------------------------------------------------------------


def _back(request: HttpRequest, slug: str) -> HttpResponse:
    if request.POST.get("from") == "dashboard":
        return redirect("sessions")
    return redirect(reverse("team", args=[slug]) + "#environments")


@require_POST
@login_required
def team_environment_add(request: HttpRequest, slug: str) -> HttpResponse:
    me = get_membership_for_user(current_user(request), slug)
    form = TeamEnvironmentForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{form.fields[f].label or f}: {' '.join(str(m) for m in e)}"
                           for f, e in form.errors.items())  # fmt: skip
        messages.error(request, f"The environment was not added. {errors}")
        return _back(request, slug)
    data = form.cleaned_data
    memory = data["memory_mib"]
    try:
        environment = services.create_team_environment(
            me, name=data["name"], repo_url=data["repository"], ref=data["ref"],
            follow_branch=data["follow_branch"], urlpath=data["urlpath"], cpu=data["cpu"],
            memory_bytes=memory * 1024**2 if memory is not None else None,
        )  # fmt: skip
    except NotFound:
        raise
    except BinderyError as exc:
        messages.error(request, f"The environment was not added: {exc.message}")
    else:
        messages.success(request, f"Environment “{environment.name}” added.")
    return _back(request, slug)


@require_POST
@login_required
def team_environment_delete(request: HttpRequest, slug: str, environment_id: int) -> HttpResponse:
    user = current_user(request)
    me, environment = selectors.get_environment_for_user(user, slug, environment_id)
    try:
        services.delete_team_environment(me, environment)
    except BinderyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Environment “{environment.name}” removed.")
    return _back(request, slug)


@require_POST
@login_required
def team_environment_launch(request: HttpRequest, slug: str, environment_id: int) -> HttpResponse:
    user = current_user(request)
    me, environment = selectors.get_environment_for_user(user, slug, environment_id)
    try:
        session = services.launch_team_environment(me, environment)
    except BinderyError as exc:
        messages.error(request, f"“{environment.name}” could not be launched: {exc.message}")
        return _back(request, slug)
    return redirect("session-launch", session.pk)


# --- share links ----------------------------------------------------------------------------


def _link_row(link: ShareLink) -> dict[str, Any]:
    name = name_for_spec(link.provider, link.spec)
    status = link.status
    return {
        "link": link,
        "repository": name.label,
        "repository_full": name.full,
        "status": status,
        "badge": "ok" if status == "active" else status,
    }


@never_cache
@login_required
def share_links(request: HttpRequest) -> HttpResponse:
    """My share links, with Revoke buttons, and the form that makes one (its secret is
    shown once, after the redirect)."""
    user = current_user(request)
    form = ShareLinkForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            issued = _create_share_link(request, user, form)
            if issued is not None:
                request.session[_ISSUED_KEY] = issued.url
                messages.success(request, "Share link created.")
                return redirect("share-links")
        else:
            messages.error(request, "The link was not created: check the fields below.")
    issued_url = request.session.pop(_ISSUED_KEY, "")
    return render(request, "sharing/links.html", {
        "form": form, "rows": [_link_row(link) for link in selectors.share_links_for(user)],
        "memberships": memberships_for_user(user), "issued_url": issued_url,
    }, status=400 if request.method == "POST" else 200)  # fmt: skip


def _create_share_link(
    request: HttpRequest, user: User, form: ShareLinkForm
) -> services.IssuedShareLink | None:
    data = form.cleaned_data
    try:
        team = None
        if data["audience"] == ShareLink.Audience.TEAM:
            if not data["team"]:
                raise InvalidInput("Choose the team to share with.")
            team = get_membership_for_user(user, data["team"]).team
        days = data["days"]
        return services.create_share_link(
            user, name=data["name"], repo_url=data["repository"], ref=data["ref"],
            urlpath=data["urlpath"], audience=data["audience"], team=team,
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )  # fmt: skip
    except BinderyError as exc:
        form.add_error(None, exc.message)
        messages.error(request, f"The link was not created: {exc.message}")
        return None


@require_POST
@login_required
def share_link_revoke(request: HttpRequest, link_id: int) -> HttpResponse:
    user = current_user(request)
    link = services.revoke_share_link(user, selectors.get_share_link_for_user(user, link_id))
    messages.success(request, f"Share link “{link.name or link.full_spec}” revoked.")
    return redirect("share-links")


@never_cache
def share_link(request: HttpRequest, token: str) -> HttpResponse:
    """/s/<token>: what the link launches and who shared it, with a Launch button (its POST
    comes here). Signed out: sign in, then back here. Unknown (or a team's link outside the
    team): 404; revoked or expired: 410."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.path)
    user = current_user(request)
    try:
        link = selectors.get_share_link_by_token(user, token)
    except BinderyError as exc:
        page = "sharing/gone.html" if exc.status == 410 else "error.html"
        return _no_referrer(render(request, page, {"error": exc}, status=exc.status))
    error: BinderyError | None = None
    if request.method == "POST":
        try:
            session = services.launch_share_link(user, link)
        except BinderyError as exc:
            error = exc
        else:
            return redirect("session-launch", session.pk)
    name = name_for_spec(link.provider, link.spec)
    response = render(request, "sharing/share.html", {
        "link": link, "repository": name, "error": error,
        "team_launch": link.audience == ShareLink.Audience.TEAM,
    }, status=error.status if error else 200)  # fmt: skip
    return _no_referrer(response)


def _no_referrer(response: HttpResponse) -> HttpResponse:
    # The secret is in this page's URL: no link on it may carry it away in a Referer.
    response["Referrer-Policy"] = "no-referrer"
    return response
