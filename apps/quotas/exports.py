"""The team usage export (CSV), for the API and the team page alike."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.http import HttpResponse
from rest_framework.renderers import BaseRenderer

from apps.quotas.limits import NAMES
from apps.quotas.services import UsageReport
from apps.teams.models import Membership, Team


class CsvRenderer(BaseRenderer):
    """Lets a client that sends ``Accept: text/csv`` reach the export (the view answers
    with its own response; error bodies are rendered as JSON text)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Any = None) -> bytes:  # fmt: skip
        import json

        return json.dumps(data).encode() if data is not None else b""


def usage_csv(team: Team, rows: list[tuple[Membership, UsageReport]],
                 label: str) -> HttpResponse:  # fmt: skip
    """Member, email, role, then used and allowed of each limit (empty: unlimited)."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["member", "email", "role", "period"]
    for name in NAMES:
        header += [f"{name}_used", f"{name}_allowed"]
    writer.writerow(header)
    for membership, report in rows:
        line: list[Any] = [membership.user.username, membership.user.email, membership.role,
                           report.period.label]  # fmt: skip
        for limit in report.limits:
            line += ["" if limit.used is None else limit.used,
                     "" if limit.allowed is None else limit.allowed]  # fmt: skip
        writer.writerow([_safe_cell(cell) for cell in line])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{team.slug}-usage-{label}.csv"'
    return response


def _safe_cell(cell: Any) -> Any:
    """No spreadsheet formulas from user-chosen names (CSV injection)."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell
