"""Pages for usage and limits: my usage (this month and past ones, mine and in each team),
the launch preview fragment, a team's usage export, the team's pool and a member's cap.

The team page's Usage and Quota sections are drawn from ``team_quotas_context`` (its view
adds it to the page); their forms POST here. The launch form and the ``/v2/`` page get
``launch_preview_for`` before launching."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.quotas import presentation as present
from apps.quotas import services
from apps.quotas.exports import usage_csv
from apps.quotas.forms import LimitsForm
from apps.quotas.limits import MONTHLY
from apps.sessions import owners
from apps.teams.models import Membership, Team
from apps.teams.selectors import (
    get_member,
    get_membership_for_user,
    memberships_for_user,
)
from apps.teams.services import require_manager
from portal.api import current_user
from portal.errors import InvalidInput, NotFound


def _manages(me: Membership) -> bool:
    return me.can_manage or me.user.is_staff


def _require_manager(me: Membership, what: str) -> None:
    require_manager(me, what, staff=True)


def _period_links(periods: list[Any], chosen: Any, base: str) -> list[dict[str, Any]]:
    return [
        {"label": p.label, "name": p.name, "url": f"{base}?period={p.label}", "chosen": p == chosen}
        for p in periods
    ]


# --- my usage -------------------------------------------------------------------------------


@never_cache
@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    """Mine: each limit with what is left, for my own launches and in each of my teams;
    ``?period=YYYY-MM`` for a past month (its monthly limits)."""
    user = current_user(request)
    period, current = present.period_from(request.GET.get("period", ""))
    mine = services.usage_for(user, period=period)
    teams = []
    for membership in memberships_for_user(user):
        report = services.usage_for(user, membership.team, period=period)
        teams.append({
            "team": membership.team, "role": membership.role,
            "rows": present.limit_rows(report, current=current, volume="the team's volume"),
        })  # fmt: skip
    periods = present.months_with_usage(user_id=user.pk)
    if period not in periods:
        periods = sorted([*periods, period], key=lambda p: p.first, reverse=True)
    return render(request, "quotas/usage.html", {
        "period": period, "current": current,
        "periods": _period_links(periods, period, reverse("usage")),
        "rows": present.limit_rows(mine, current=current, volume="your home volume"),
        "teams": teams,
    })  # fmt: skip


# --- before a launch ------------------------------------------------------------------------


def launch_preview_for(request: HttpRequest, team: Team | None = None) -> present.LaunchPreview:
    """What this visitor's launch (for ``team``, or their own) would use and have left, or
    the refusal it would meet. Reads only: a visitor who never launched has no owner id yet
    and gets none made."""
    if request.user.is_authenticated:
        return present.launch_preview(current_user(request), team)
    return present.launch_preview(None, anonymous_owner=owners.existing_owner(request.session))


def team_for_preview(request: HttpRequest, slug: str) -> Team | None:
    """The team ``slug`` when the visitor is in it, else None (a personal launch)."""
    slug = slug.strip()
    if not slug or not request.user.is_authenticated:
        return None
    try:
        return get_membership_for_user(current_user(request), slug).team
    except NotFound:
        return None


@never_cache
@require_GET
def launch_preview(request: HttpRequest) -> HttpResponse:
    """The preview box's content for ``?team=`` (the launch forms' script asks for it when
    the team select changes). A team one is not in is 404."""
    slug = request.GET.get("team", "").strip()
    team = None
    if slug:
        if not request.user.is_authenticated:
            raise NotFound("No such team.")
        team = get_membership_for_user(current_user(request), slug).team
    context = {
        "preview": launch_preview_for(request, team),
        "signed_in": request.user.is_authenticated,
    }
    return render(request, "quotas/_launch_preview.html", context)


# --- a team's usage and limits ----------------------------------------------------------------


def _member_rows(team: Team, period: Any, current: bool) -> list[dict[str, Any]]:
    """Each member's use within the team (a past month: its monthly limits only)."""
    names = [n for n in present.ORDER if current or n in MONTHLY]
    rows = []
    for membership, report in services.member_usage(team, period):
        by_name = {limit.name: limit for limit in report.limits}
        rows.append({
            "membership": membership,
            "cap_url": reverse("member-quota", args=[team.slug, membership.pk]),
            "cells": [{"name": n, "title": present.TITLES[n], "text": present.cell(by_name[n])}
                      for n in names],
        })  # fmt: skip
    return rows


def _field_rows(form: LimitsForm, ceiling: dict[str, Any], whose: str) -> list[dict[str, Any]]:
    """Each field with the most it may be ("At most 5 sessions (the site's ceiling)")."""
    rows = []
    for name in present.ORDER:
        bound = ceiling.get(name)
        rows.append({
            "field": form[name],
            "ceiling": f"At most {present.amount(name, bound)} ({whose})" if bound is not None
            else "",
        })  # fmt: skip
    return rows


def _pool_form(team: Team, data: Any = None) -> tuple[LimitsForm, list[dict[str, Any]]]:
    form = LimitsForm(data, current=services.team_quota(team), prefix="pool")
    return form, _field_rows(form, services.team_ceiling(team), "the site's and staff's ceiling")


def team_quotas_context(me: Membership, period_text: str = "") -> dict[str, Any]:
    """What ``quotas/_team_usage.html`` and ``quotas/_team_quota.html`` need on the team
    page: the team's totals against its pool (every member); for owners and admins also
    each member's use, past months (``?period=``), the export, the pool form and caps."""
    team, manages = me.team, _manages(me)
    period, current = present.period_from(period_text) if manages else present.period_from("")
    context: dict[str, Any] = {
        "manages": manages, "period": period, "current": current,
        "rows": present.limit_rows(services.team_usage(team, period), current=current,
                                   volume="the team's volume"),
    }  # fmt: skip
    if manages:
        base = reverse("team", args=[team.slug])
        periods = present.months_with_usage(team_id=team.pk)
        if period not in periods:
            periods = sorted([*periods, period], key=lambda p: p.first, reverse=True)
        form, fields = _pool_form(team)
        context.update({
            "members": _member_rows(team, period, current),
            "headers": [present.TITLES[n] for n in present.ORDER if current or n in MONTHLY],
            "periods": _period_links(periods, period, base),
            "csv_url": reverse("team-usage-csv", args=[team.slug]) + f"?period={period.label}",
            "form": form, "fields": fields,
        })  # fmt: skip
    return context


@never_cache
@login_required
@require_GET
def team_usage_csv(request: HttpRequest, slug: str) -> HttpResponse:
    """Each member's use and limits for ``?period=YYYY-MM`` (this month by default), in the
    API's units (hours, minutes, bytes, cores; an empty ``allowed`` is unlimited). Owners and
    admins only: a member is refused (403), an outsider finds no team (404)."""
    me = get_membership_for_user(current_user(request), slug)
    _require_manager(me, "export the team's usage")
    text = request.GET.get("period", "")
    period, _ = present.period_from(text)
    if text and text != period.label:
        raise InvalidInput("period must be a month such as 2026-11, not in the future.",
                           code="PERIOD_INVALID")  # fmt: skip
    return usage_csv(me.team, services.member_usage(me.team, period), period.label)


def _save(form: LimitsForm, request: HttpRequest, save: Any, done: str) -> bool:
    """Validate, call the service with what changed, put its sentence beside the field it
    names. True when saved (or nothing changed)."""
    if not form.is_valid():
        return False
    changes = form.changes()
    if not changes:
        messages.info(request, "Nothing changed.")
        return True
    try:
        save(changes)
    except InvalidInput as exc:  # QUOTA_INVALID, QUOTA_ABOVE_CEILING: nothing was saved
        name = str(exc.data.get("limit", ""))
        form.add_error(name if name in form.fields else None, exc.message)
        return False
    messages.success(request, done)
    return True


@never_cache
@login_required
def team_quota(request: HttpRequest, slug: str) -> HttpResponse:
    """The team's pool: GET the form, POST it (owners and admins, within the ceiling)."""
    me = get_membership_for_user(current_user(request), slug)
    _require_manager(me, "set the team's limits")
    form, fields = _pool_form(me.team, request.POST if request.method == "POST" else None)
    if request.method == "POST":
        saved = _save(form, request, lambda values: services.set_team_quota(me, values),
                      f"Saved {me.team.name}'s limits.")  # fmt: skip
        if saved:
            return redirect(reverse("team", args=[slug]) + "#quota")
    status = 400 if form.is_bound and form.errors else 200
    context = {"team": me.team, "me": me, "form": form, "fields": fields}
    return render(request, "quotas/team_quota.html", context, status=status)


@never_cache
@login_required
def member_quota(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    """A member's cap within the team's pool: GET the form, POST it (owners and admins)."""
    me = get_membership_for_user(current_user(request), slug)
    _require_manager(me, "set a member's limits")
    target = get_member(me, membership_id)
    data = request.POST if request.method == "POST" else None
    form = LimitsForm(data, current=services.member_quota(target), prefix="cap")
    fields = _field_rows(form, services.team_quota(me.team), f"{me.team.name}'s pool")
    if request.method == "POST":
        saved = _save(form, request,
                      lambda values: services.set_member_quota(me, target, values),
                      f"Saved {target.user.label}'s cap in {me.team.name}.")  # fmt: skip
        if saved:
            return redirect(reverse("team", args=[slug]) + "#quota")
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "quotas/member_quota.html", {
        "team": me.team, "me": me, "target": target, "form": form, "fields": fields,
    }, status=status)  # fmt: skip
