"""SessionSerializer's own ``to_representation`` (the list's fast path) gives exactly what
``ModelSerializer.to_representation`` gives from the declared fields, on every kind of row
and in another time zone: a field added to ``Meta.fields`` and not to the fast path fails
here."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework import serializers

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import selectors
from apps.sessions.api.serializers import SessionSerializer, TeamSessionSerializer
from apps.sessions.models import Session
from apps.teams.models import Team

pytestmark = pytest.mark.django_db

STATUSES = ["ready", "building", "stopped", "failed", "launching", "pending", "stopping"]


def make_rows() -> None:
    user: Any = UserFactory()
    team = Team.objects.create(slug="lab", name="Lab")
    now = timezone.now().replace(microsecond=123456)
    for n, status in enumerate(STATUSES * 2):
        build = Build.objects.create(
            provider="gh", spec=f"org/r-{n}/main", repo_url="x", repo_slug="x",
            display_name="x", resolved_ref="0" * 40, resolved={}, build_key=f"fast-{n}",
            status="running" if status == "building" else "ready",
            phase="waiting" if n % 2 else "building",
        )  # fmt: skip
        Session.objects.create(
            user=user if n % 3 else None, anonymous_owner="" if n % 3 else f"visitor-{n}",
            team=team if n % 2 else None, build=build, hub_user=f"u{n}",
            provider="gh", spec=f"org/r-{n}/main", status=status, urlpath="lab/tree/a b.ipynb",
            url=f"/user/u{n}/s{n}/" if status == "ready" else "",
            memory_bytes=(n + 1) * 1024**3, cpu=None if n % 2 else 0.5,
            ready_at=now - timedelta(minutes=n) if n % 4 else None,
            last_activity=now - timedelta(seconds=n) if n % 5 else None,
            stopped_at=now if status == "stopped" else None,
            error_code="SPAWN_FAILED" if status == "failed" else "",
            error_message="It did not start." if status == "failed" else "",
        )  # fmt: skip


def generic(serializer: Any, session: Session) -> dict[str, Any]:
    return dict(serializers.ModelSerializer.to_representation(serializer, session))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_the_fast_path_equals_the_declared_fields(zone: str) -> None:
    make_rows()
    with timezone.override(zone):
        for kind, rows in (
            (SessionSerializer, selectors.listed(Session.objects.order_by("pk"))),
            (TeamSessionSerializer, selectors.listed(Session.objects.all(), with_user=True)),
        ):
            serializer = kind()
            checked = 0
            for session in rows:
                fast = serializer.to_representation(session)
                assert list(fast) == list(kind.Meta.fields)
                # as the renderer writes them: same JSON, same order
                assert json.dumps(fast) == json.dumps(generic(serializer, session)), session.status
                checked += 1
            assert checked == 2 * len(STATUSES)
    if zone == "Europe/Paris":  # the control: the zone shows in the dates
        with timezone.override(zone):
            first = SessionSerializer().to_representation(Session.objects.earliest("pk"))
        assert first["created_at"].endswith(("+01:00", "+02:00"))
