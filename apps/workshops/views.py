"""Workshop pages: the instructor's (list and create, the workshop with its pre-build,
join code, QR code and live roster, its actions and exports) and the attendee's (/join,
/w/<code>: waiting, closed, full, the join form, their seat)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.builds.logs import status_payload
from apps.builds.models import Build
from apps.builds.views import PHASES as BUILD_PHASES
from apps.quotas.services import QuotaExceeded
from apps.repos.names import name_for
from apps.sessions.failures import build_failed_step, phase_states
from apps.sessions.owners import anonymous_owner, existing_owner
from apps.workshops import notebooks, presentation, selectors, services
from apps.workshops.forms import (
    SERVICE_FIELDS,
    ExtendForm,
    JoinForm,
    SeatsForm,
    SessionLengthForm,
    WorkshopForm,
    in_zone,
    local_input,
)
from apps.workshops.models import Seat, Workshop
from portal.api import current_user
from portal.errors import BinderyError, InvalidInput, NotFound

# --- the instructor's pages -----------------------------------------------------------------


@login_required
def workshop_list(request: HttpRequest) -> HttpResponse:
    """My workshops, and the form creating one (pinned and pre-built at once)."""
    user = current_user(request)
    form = WorkshopForm(user, request.POST or None)
    error: BinderyError | None = None
    if request.method == "POST" and form.is_valid():
        try:
            workshop = services.create_workshop(user, **form.service_arguments())
        except BinderyError as exc:
            error = exc
            _show_error(form, exc)
        else:
            messages.success(request, f"“{workshop.title}” is created; its environment is "
                                      "building now.")  # fmt: skip
            return redirect("workshop", workshop.pk)
    mine = selectors.workshops_for(user).annotate(taken=Count("seat_set", distinct=True))
    workshops = [
        {"w": w, "when": presentation.window(w), "status": w.status,
         "status_label": Workshop.Status(w.status).label}
        for w in mine.order_by("-opens_at", "-id")
    ]  # fmt: skip
    return render(request, "workshops/list.html", {
        "form": form, "error": error, "workshops": workshops,
        "may_create": services.may_create(user) or bool(form.managed),
    })  # fmt: skip


def _show_error(form: WorkshopForm, exc: BinderyError) -> None:
    """The service's refusal beside the field it is about; else above the form."""
    fields: dict[str, list[str]] = exc.data.get("fields") or {}
    placed = False
    for name, problems in fields.items():
        name = SERVICE_FIELDS.get(name, name)
        if name in form.fields:
            form.add_error(name, " ".join(problems))
            placed = True
    if placed:
        return
    if isinstance(exc, QuotaExceeded):
        beside = {"memory": "memory", "cpu": "cpu"}.get(str(exc.data.get("limit")), "seats")
        form.add_error(beside, exc.message)
    elif exc.code.startswith("REF_"):
        form.add_error("ref", exc.message)
    elif exc.code.startswith("URLPATH"):
        form.add_error("urlpath", exc.message)
    elif type(exc).__module__ == "apps.repos.errors":
        form.add_error("repository", exc.message)
    else:
        form.add_error(None, exc.message)


def join_url(workshop: Workshop) -> str:
    return settings.SITE_URL + reverse("workshop-join", args=[workshop.code])


@login_required
@never_cache
def workshop_detail(request: HttpRequest, workshop_id: int) -> HttpResponse:
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    build = workshop.build
    building = build is not None and not build.is_terminal
    failed = build is not None and build.status in (Build.Status.FAILED, Build.Status.CANCELLED)
    current = Build.Phase.BUILT if build is not None and build.status == Build.Status.READY else ""
    if build is not None and not current:
        current = build_failed_step(build) if failed else build.phase
    roster = presentation.roster_payload(workshop.pk)
    return render(request, "workshops/detail.html", {
        "workshop": workshop, "build": build, "name": name_for(workshop),
        "window": presentation.window(workshop), "building": building, "failed": failed,
        "steps": phase_states(BUILD_PHASES, current, failed),
        "status_json": json.dumps(status_payload(build)) if build is not None else "",
        "join_url": join_url(workshop), "roster": roster, "summary": roster["workshop"],
        "extend_form": ExtendForm(initial={
            "closes_at": local_input(workshop.closes_at, workshop.time_zone)}),
        "length_form": SessionLengthForm(initial={"session_minutes": workshop.session_minutes}),
        "seats_form": SeatsForm(initial={"add": 5}),
        "closed": workshop.is_closed,
        "roster_config": {"workshopId": workshop.pk}, "template_row": TEMPLATE_ROW,
    })  # fmt: skip


# The roster row the page's script fills in (every part present; it removes what a row lacks).
TEMPLATE_ROW = {"id": "", "name": "", "who": "", "guest": False, "joined_at": "", "joined": "",
                "status": "none", "status_label": "", "last_activity_label": "", "memory": "",
                "time_left": "", "error_message": "", "can_stop": True, "can_restart": True,
                "stop_url": "#", "restart_url": "#", "files_url": "#"}  # fmt: skip


def _rotate(request: HttpRequest, workshop: Workshop) -> str:
    workshop = services.rotate_code(current_user(request), workshop)
    return f"The new code is {workshop.code}; the old one no longer works."


def _update_environment(request: HttpRequest, workshop: Workshop) -> str:
    services.update_environment(current_user(request), workshop)
    return "Building the latest commit now; attendees get it once it is built."


def _add_seats(request: HttpRequest, workshop: Workshop) -> str:
    form = SeatsForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("Add a whole number of seats, from 1 to 1000.")
    seats = workshop.seats + form.cleaned_data["add"]
    workshop = services.update_workshop(current_user(request), workshop, {"seats": seats})
    return f"The workshop has {workshop.seats} seats now."


def _extend(request: HttpRequest, workshop: Workshop) -> str:
    form = ExtendForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("Give the new closing date and time.")
    closes_at = in_zone(form.cleaned_data["closes_at"], workshop.time_zone)
    workshop = services.update_workshop(current_user(request), workshop, {"closes_at": closes_at})
    return f"The workshop closes at {presentation.window(workshop)['closes']} now."


def _session_length(request: HttpRequest, workshop: Workshop) -> str:
    form = SessionLengthForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("A session lasts 5 minutes to 24 hours.")
    minutes = form.cleaned_data["session_minutes"]
    services.update_workshop(current_user(request), workshop, {"session_minutes": minutes})
    return f"Sessions last {minutes} minutes now, counted from each attendee's join."


def _close(request: HttpRequest, workshop: Workshop) -> str:
    services.close_workshop(current_user(request), workshop)
    return "The workshop is closed; its sessions are stopping."


def _stop_all(request: HttpRequest, workshop: Workshop) -> str:
    n = services.stop_all(current_user(request), workshop)
    return f"Stopping {n} session{'s' if n != 1 else ''}."


ACTIONS: dict[str, Callable[[HttpRequest, Workshop], str]] = {
    "rotate": _rotate,
    "update-environment": _update_environment,
    "add-seats": _add_seats,
    "extend": _extend,
    "session-length": _session_length,
    "close": _close,
    "stop-all": _stop_all,
}


@require_POST
@login_required
def workshop_action(request: HttpRequest, workshop_id: int, action: str) -> HttpResponse:
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    handler = ACTIONS.get(action)
    if handler is None:
        raise NotFound("No such action.")
    try:
        messages.success(request, handler(request, workshop))
    except BinderyError as exc:
        messages.error(request, exc.message)
    return redirect("workshop", workshop.pk)


@require_POST
@login_required
def seat_action(request: HttpRequest, workshop_id: int, seat_id: int, action: str) -> HttpResponse:
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    seat = services.get_seat(workshop, seat_id)
    try:
        if action == "stop":
            services.stop_seat(current_user(request), workshop, seat)
            messages.success(request, f"Stopping {seat.name}'s session.")
        elif action == "restart":
            services.restart_seat(current_user(request), workshop, seat)
            messages.success(request, f"Restarting {seat.name}'s session.")
        else:
            raise NotFound("No such action.")
    except BinderyError as exc:
        if isinstance(exc, NotFound):
            raise
        messages.error(request, exc.message)
    return redirect(reverse("workshop", args=[workshop.pk]) + "#roster")


@login_required
@never_cache
@require_GET
def seat_files(request: HttpRequest, workshop_id: int, seat_id: int) -> HttpResponse:
    """A read-only list of an attendee's files, read from their running server."""
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    seat = services.get_seat(workshop, seat_id)
    path = notebooks.clean_path(request.GET.get("path", ""))
    listing: list[notebooks.Entry] = []
    error = ""
    if seat.session is None or seat.session.status != seat.session.Status.READY:
        error = f"{seat.name}'s server is not running: there are no files to show."
    else:
        try:
            listing = notebooks.list_files(seat.session, path)
        except BinderyError as exc:
            error = exc.message
    return render(request, "workshops/files.html", {
        "workshop": workshop, "seat": seat, "path": path, "entries": listing, "error": error,
        "parents": notebooks.parents(path),
    })  # fmt: skip


@login_required
@never_cache
def qr_code(request: HttpRequest, workshop_id: int) -> HttpResponse:
    """The join URL as a QR code (SVG), for the room's screen."""
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    out = io.BytesIO()
    segno.make(join_url(workshop), error="m").save(
        out, kind="svg", scale=10, border=2, title=f"Join {workshop.title}"
    )
    return HttpResponse(out.getvalue(), content_type="image/svg+xml")


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: names people typed must not become formulas."""
    text = "" if value is None else str(value).replace("\xa0", " ")
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@login_required
@never_cache
def roster_csv(request: HttpRequest, workshop_id: int) -> HttpResponse:
    workshop = selectors.get_workshop_for_instructor(request.user, workshop_id)
    rows = presentation.roster_payload(workshop.pk)["rows"]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="workshop-{workshop.pk}-roster.csv"'
    writer = csv.writer(response)
    writer.writerow(["name", "signed in as", "joined at", "status", "last activity", "memory"])
    for row in rows:
        writer.writerow([_csv_cell(v) for v in (
            row["name"], row["who"], row["joined_at"], row["status"],
            row["last_activity"] or "", row["memory"] if row["memory"] != "—" else "",
        )])  # fmt: skip
    return response


# --- the attendee's pages -------------------------------------------------------------------


def enter(request: HttpRequest) -> HttpResponse:
    """/join: type the code the instructor shows."""
    code = services.normalise_code(request.GET.get("code", ""))
    if code:
        return redirect("workshop-join", code)
    return render(request, "workshops/enter.html", {"typed": request.GET.get("code", "")})


def _unknown(request: HttpRequest, code: str) -> HttpResponse:
    return render(request, "workshops/unknown.html", {"code": code}, status=404)


@never_cache
def join_page(request: HttpRequest, code: str) -> HttpResponse:
    """/w/<code>: what the workshop is now for this visitor (their seat; or not open yet,
    closed, full; or the join form), and, POSTed, taking a seat."""
    normal = services.normalise_code(code)
    if normal != code:
        return redirect("workshop-join", normal)
    try:
        workshop = services.workshop_for_code(code)
    except services.WorkshopNotFound:
        return _unknown(request, code)
    user = request.user if request.user.is_authenticated else None
    if request.method == "POST":
        return _join(request, workshop, user)
    seat = selectors.seat_for_visitor(workshop, request.user, existing_owner(request.session))
    return _page(request, workshop, seat, JoinForm())


def _page(
    request: HttpRequest, workshop: Workshop, seat: Seat | None, form: JoinForm,
    *, status: int = 200, refusal: str = "",
) -> HttpResponse:  # fmt: skip
    context: dict[str, Any] = {
        "workshop": workshop, "window": presentation.window(workshop), "form": form,
        "refusal": refusal, "signed_in": request.user.is_authenticated,
        "login_next": reverse("workshop-join", args=[workshop.code]),
    }  # fmt: skip
    if workshop.is_closed:
        return render(request, "workshops/closed.html", context, status=410)
    if seat is not None:
        context["banner"] = presentation.seat_banner(seat, workshop)
        context["seat"] = seat
        context["may_restart"] = workshop.status == Workshop.Status.OPEN
        return render(request, "workshops/seated.html", context, status=status)
    if workshop.status != Workshop.Status.OPEN:
        context["wait_config"] = presentation.wait_state(workshop)
        return render(request, "workshops/waiting.html", context, status=status)
    if workshop.seat_set.count() >= workshop.seats:
        return render(request, "workshops/full.html", context, status=409)
    return render(request, "workshops/join.html", context, status=status)


def _join(request: HttpRequest, workshop: Workshop, user: Any) -> HttpResponse:
    form = JoinForm(request.POST)
    name = form.data.get("name", "") if user is None else ""
    try:
        joined = services.join(
            workshop.code, user=user, name=str(name),
            guest_owner=anonymous_owner(request.session) if user is None else "",
        )  # fmt: skip
    except services.SignInRequired:
        return redirect_to_login(reverse("workshop-join", args=[workshop.code]))
    except (services.WorkshopFull, services.WorkshopNotOpen, services.WorkshopClosed):
        return _page(request, workshop, None, form, status=409)
    except services.JoinNotAllowed as exc:
        return _page(request, workshop, None, form, status=403, refusal=exc.message)
    except InvalidInput as exc:
        form.add_error("name" if "name" in exc.data.get("fields", {}) else None, exc.message)
        return _page(request, workshop, None, form, status=400)
    return redirect("session-launch", joined.session.pk)


@never_cache
@require_GET
def join_status(request: HttpRequest, code: str) -> JsonResponse:
    """The waiting page's poll: is the workshop open yet?"""
    try:
        workshop = services.workshop_for_code(code)
    except services.WorkshopNotFound as exc:
        return JsonResponse(exc.as_dict(), status=404)
    return JsonResponse(presentation.wait_state(workshop))
