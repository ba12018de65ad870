from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.builds import selectors, services
from apps.builds.api.serializers import receipt_for
from apps.builds.forms import BuildForm
from apps.builds.logs import status_payload
from apps.builds.models import Build
from apps.repos.names import name_for
from apps.sessions.failures import Action, Failure, build_failed_step, phase_states, retry_url
from apps.teams.selectors import memberships_for_user
from portal.api import current_user
from portal.errors import BinderyError

PHASES = [
    (Build.Phase.WAITING, "Waiting"),
    (Build.Phase.FETCHING, "Fetching"),
    (Build.Phase.BUILDING, "Building"),
    (Build.Phase.BUILT, "Built"),
]


@login_required
def build_list(request: HttpRequest) -> HttpResponse:
    # a failed build's "Build again" comes back here with the form filled in
    form = BuildForm(request.POST or None, initial=request.GET.dict())
    failure: BinderyError | None = None
    if request.method == "POST" and form.is_valid():
        try:
            requested = services.build_from_text(
                current_user(request), form.cleaned_data["repository"], form.cleaned_data["ref"]
            )
        except BinderyError as exc:
            form.add_error("repository", exc.message)
            failure = exc
        else:
            if not requested.created:
                messages.info(request, "This version was already built or is building: here it is.")
            return redirect("build", build_id=requested.build.pk)
    builds = selectors.visible_builds(request.user).filter(requested_by=current_user(request))[:50]
    return render(request, "builds/list.html", {"form": form, "builds": builds, "error": failure})


@login_required
def build_detail(request: HttpRequest, build_id: int) -> HttpResponse:
    build = selectors.get_build_for_user(request.user, build_id)
    failed = build.status in (Build.Status.FAILED, Build.Status.CANCELLED)
    current = Build.Phase.BUILT if build.status == Build.Status.READY else build.phase
    if failed:
        current = build_failed_step(build)
    context = {
        "build": build,
        "name": name_for(build),
        "steps": phase_states(PHASES, current, failed),
        "failure": _failure(build) if failed else None,
        "launch_teams": memberships_for_user(current_user(request)),
        "receipt": receipt_for(build),
        "status_json": json.dumps(status_payload(build)),
        "can_cancel": not build.is_terminal and build.requested_by_id == request.user.pk,
    }
    return render(request, "builds/detail.html", context)


def _failure(build: Build) -> Failure:
    """A failed build's panel: the sentence once, its step, build again or launch anyway."""
    name = name_for(build)
    again = reverse("builds") + "?" + urlencode({"repository": name.url, "ref": name.ref})
    cancelled = build.status == Build.Status.CANCELLED
    step = build_failed_step(build)
    return Failure(
        title="This build was cancelled" if cancelled else "This build failed",
        message=build.error_message or f"The build was {build.get_status_display().lower()}.",
        code=build.error_code,
        step=step,
        actions=[
            Action("Build again", again, "retry"),
            Action("Edit and launch", retry_url(name), "retry"),
        ],
    )


@require_POST
@login_required
def build_cancel(request: HttpRequest, build_id: int) -> HttpResponse:
    build = selectors.get_build_for_user(request.user, build_id)
    try:
        services.cancel_build(current_user(request), build)
        messages.success(request, "Cancelling the build.")
    except BinderyError as exc:
        messages.error(request, exc.message)
    return redirect("build", build_id=build.pk)


@login_required
def build_history(request: HttpRequest, repo_slug: str) -> HttpResponse:
    builds = selectors.visible_builds(request.user).filter(repo_slug=repo_slug)[:200]
    if not builds:
        return render(request, "404.html", status=404)
    return render(request, "builds/history.html", {"builds": builds, "repo": builds[0]})
