"""Pages for repositories: the launch form (also "edit and retry", filled in) and the
credentials for private repositories (add, list, delete; yours, or a team's as its admin)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.quotas.views import launch_preview_for, team_for_preview
from apps.repos import selectors, services
from apps.repos.forms import CredentialForm, LaunchForm
from apps.repos.parsing import parse_repo_input
from apps.teams.selectors import get_membership_for_user, memberships_for_user
from portal.api import current_user
from portal.errors import BinderyError


def _team_choices(request: HttpRequest, managed_only: bool) -> list[tuple[str, str]]:
    if not request.user.is_authenticated:
        return []
    rows = memberships_for_user(current_user(request))
    return [(m.team.slug, m.team.name) for m in rows if m.can_manage or not managed_only]


def launch_form(request: HttpRequest) -> HttpResponse:
    """GET: the launch form, filled in from the query (how a failure's "Edit and retry"
    comes back). POST: parse what was typed and go to its /v2/ page, which launches."""
    teams = _team_choices(request, managed_only=False)
    form = LaunchForm(
        request.POST if request.method == "POST" else None, initial=request.GET.dict(), teams=teams
    )
    if request.method == "POST" and form.is_valid():
        try:
            provider, spec = parse_repo_input(
                form.cleaned_data["repository"], form.cleaned_data["ref"]
            )
        except BinderyError as exc:
            form.add_error("repository", exc.message)
        else:
            query = (
                urlencode({"team": form.cleaned_data["team"]}) if form.cleaned_data["team"] else ""
            )
            return redirect(f"/v2/{provider}/{spec}" + (f"?{query}" if query else ""))
    team = team_for_preview(request, request.POST.get("team") or request.GET.get("team") or "")
    preview = launch_preview_for(request, team) if request.user.is_authenticated else None
    return render(request, "repos/launch.html", {"form": form, "preview": preview})


def _credential_rows(request: HttpRequest) -> list[dict[str, object]]:
    user = current_user(request)
    roles = selectors.team_roles(user)
    return [
        {
            "credential": c,
            "can_delete": c.user_id is not None or roles.get(c.team_id or 0) in ("owner", "admin"),
        }
        for c in selectors.credentials_for_user(user)
    ]


@never_cache
@login_required
def credentials(request: HttpRequest) -> HttpResponse:
    """Your credentials and your teams': add one (never shown again), list, delete."""
    teams = _team_choices(request, managed_only=True)
    form = CredentialForm(
        request.POST or None, initial={"host": request.GET.get("host", "")}, teams=teams
    )
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        slug = data.pop("team") or ""
        try:
            team = get_membership_for_user(current_user(request), slug).team if slug else None
            credential = services.create_credential(current_user(request), team=team, **data)
        except BinderyError as exc:
            form.add_error(None, exc.message)
        else:
            whose = f"the team {team.name}" if team else "you"
            messages.success(
                request,
                f"Saved a credential for {credential.host}, for {whose}. "
                "Its token is stored encrypted and will not be shown again.",
            )
            return redirect("credentials")
    return render(
        request,
        "repos/credentials.html",
        {
            "form": form,
            "rows": _credential_rows(request),
            "can_share": bool(teams),
        },
    )


@require_POST
@login_required
def credential_delete(request: HttpRequest, credential_id: int) -> HttpResponse:
    user = current_user(request)
    credential = selectors.get_credential_for_user(user, credential_id)
    try:
        services.delete_credential(user, credential)
    except BinderyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Deleted the credential for {credential.host}.")
    return redirect("credentials")
