from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.redirects import with_next
from apps.quotas.views import team_quotas_context
from apps.sessions.team_views import team_session_rows
from apps.sharing.views import team_environments_context
from apps.teams import selectors, services
from apps.teams.forms import EmailInviteForm, LinkInviteForm, RoleForm, TeamForm
from apps.teams.models import Role
from portal.api import current_user
from portal.errors import BinderyError, NotFound


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.create_team(current_user(request), form.cleaned_data["name"])
        except BinderyError as exc:
            form.add_error("name", exc.message)
        else:
            messages.success(request, f"Team “{team.name}” created. You are its owner.")
            return redirect("team", slug=team.slug)
    memberships = selectors.memberships_for_user(current_user(request))
    return render(request, "teams/list.html", {"form": form, "memberships": memberships})


def _detail_context(request: HttpRequest, slug: str) -> dict[str, object]:
    me = selectors.get_membership_for_user(current_user(request), slug)
    return {
        "me": me,
        "team": me.team,
        "members": selectors.members_of(me.team),
        "invitations": selectors.invitations_for(me) if me.can_manage else [],
        "team_sessions": team_session_rows(me) if me.can_manage else [],
        "environments": team_environments_context(me),
        "quotas": team_quotas_context(me, request.GET.get("period", "")),
        "roles": Role.choices,
        "rename_form": TeamForm(initial={"name": me.team.name}),
        "email_form": EmailInviteForm(),
        "link_form": LinkInviteForm(),
    }


_ISSUED_KEY = "teams.issued_invite_link"


@never_cache
@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    context = _detail_context(request, slug)
    issued = request.session.get(_ISSUED_KEY)
    if isinstance(issued, dict) and issued.get("team") == slug:
        del request.session[_ISSUED_KEY]  # shown once
        context["issued_link"] = issued.get("url", "")
    return render(request, "teams/detail.html", context)


def _act(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    """Run one POSTed team action, flash its outcome, and come back to the team page."""
    me = selectors.get_membership_for_user(current_user(request), slug)
    issued = None
    try:
        if action == "rename":
            form = TeamForm(request.POST)
            if form.is_valid():
                services.update_team(me, form.cleaned_data["name"])
                messages.success(request, "Team renamed.")
        elif action == "delete":
            if request.POST.get("confirm") != me.team.slug:
                messages.error(request, "Type the team address to confirm deletion.")
            else:
                services.delete_team(me)
                messages.success(request, f"Team “{me.team.name}” deleted.")
                return redirect("teams")
        elif action == "leave":
            services.leave_team(me)
            messages.success(request, f"You left “{me.team.name}”.")
            return redirect("teams")
        elif action == "role":
            target = selectors.get_member(me, request.POST.get("membership", ""))
            role_form = RoleForm(request.POST)
            if role_form.is_valid():
                services.change_role(me, target, role_form.cleaned_data["role"])
                messages.success(request, f"{target.user.label} is now {target.role}.")
        elif action == "remove":
            target = selectors.get_member(me, request.POST.get("membership", ""))
            services.remove_member(me, target)
            messages.success(request, f"{target.user.label} was removed.")
            if target.pk == me.pk:
                return redirect("teams")
        elif action == "invite-email":
            email_form = EmailInviteForm(request.POST)
            if email_form.is_valid():
                services.invite_by_email(me, **email_form.cleaned_data)
                messages.success(request, f"Invitation sent to {email_form.cleaned_data['email']}.")
            else:
                messages.error(request, "Enter a valid email address.")
        elif action == "invite-link":
            link_form = LinkInviteForm(request.POST)
            if link_form.is_valid():
                issued = services.create_invite_link(me, **link_form.cleaned_data)
        elif action == "revoke-invitation":
            invitation = selectors.get_invitation(me, request.POST.get("invitation", ""))
            services.revoke_invitation(me, invitation)
            messages.success(request, "Invitation revoked.")
        else:
            raise NotFound("No such team action.")
    except NotFound:
        raise
    except BinderyError as exc:
        messages.error(request, exc.message)
    if issued is not None:
        # The link holds a secret: it waits in this person's server-side session for the
        # one page view after the redirect (post/redirect/get), then it is gone from there.
        request.session[_ISSUED_KEY] = {"team": me.team.slug, "url": issued.url}
    return redirect("team", slug=slug)


@require_POST
@login_required
def team_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    return _act(request, slug, action)


@never_cache
def join(request: HttpRequest, token: str) -> HttpResponse:
    """The invitation's landing page. Signed out, it names the team and offers sign-in and
    sign-up, both coming back here (``next``), so the invitation survives either."""
    try:
        invitation = services.find_invitation(token)
    except BinderyError as exc:
        return render(request, "error.html", {"error": exc}, status=exc.status)
    here = request.path
    if not request.user.is_authenticated:
        if request.method == "POST":
            return redirect_to_login(here)
        return render(request, "teams/join.html", {
            "invitation": invitation, "login_next": here,
            "login_url": with_next(reverse("account_login"), here),
            "signup_url": with_next(reverse("account_signup"), here),
        })  # fmt: skip
    if request.method == "POST":
        try:
            membership = services.accept_invitation(current_user(request), token)
        except BinderyError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Welcome to {membership.team.name}.")
            return redirect("team", slug=membership.team.slug)
    return render(request, "teams/join.html", {"invitation": invitation})
