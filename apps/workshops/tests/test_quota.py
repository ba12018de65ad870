"""A workshop's seats count against its instructor's (or its team's) quota, reserved for the
window; its sessions' time is charged to the workshop, never to attendees (guests above
all). Real database rows and real git repositories over HTTP; no server is started."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import ledger
from apps.quotas import services as quotas
from apps.quotas.models import Quota, UsageRecord
from apps.sessions.models import Session
from apps.workshops import services
from apps.workshops.models import Workshop

pytestmark = pytest.mark.django_db


@pytest.fixture
def repo(git_host):
    return git_host.create_repo(f"org/ws-{uuid.uuid4().hex[:8]}", {"requirements.txt": ""})


def workshop(owner, repo, *, seats=3, opens_in=timedelta(minutes=-1), hours=2, **extra) -> Workshop:
    now = timezone.now()
    return services.create_workshop(
        owner, title="Intro", repo_url=repo.url, opens_at=now + opens_in,
        closes_at=now + opens_in + timedelta(hours=hours), seats=seats, guests=True, **extra,
    )  # fmt: skip


def built(w: Workshop) -> Workshop:
    Build.objects.filter(pk=w.build_id or 0).update(status="ready", result={})
    return Workshop.objects.select_related("build").get(pk=w.pk)


def test_seats_beyond_the_instructors_sessions_are_refused_and_nothing_is_made(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 5})
    workshop(owner, repo, seats=3)
    with pytest.raises(quotas.QuotaExceeded) as refused:
        workshop(owner, repo, seats=3)  # overlaps the first: 6 > 5
    assert refused.value.data["limit"] == "sessions"
    assert (refused.value.data["used"], refused.value.data["allowed"]) == (3, 5)
    assert Workshop.objects.count() == 1
    # a workshop in another window does not overlap: it fits
    workshop(owner, repo, seats=3, opens_in=timedelta(days=2))
    assert Workshop.objects.count() == 2


def test_a_seat_cannot_be_larger_than_one_of_the_instructors_sessions(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 10, "memory": 1024**3})
    with pytest.raises(quotas.QuotaExceeded) as refused:
        workshop(owner, repo, memory_bytes=2 * 1024**3)
    assert refused.value.data["limit"] == "memory"
    assert not Workshop.objects.exists()


def test_seats_times_their_length_must_fit_the_months_hours(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 40, "session_hours": 10})
    with pytest.raises(quotas.QuotaExceeded) as refused:
        workshop(owner, repo, seats=30, session_minutes=60)  # 30 hours > 10
    assert refused.value.data["limit"] == "session_hours"
    workshop(owner, repo, seats=5, session_minutes=60)  # 5 hours fit


def test_during_the_window_the_reserved_seats_count_as_the_instructors_sessions(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 4})
    built(workshop(owner, repo, seats=3))
    report = quotas.usage_for(owner).get("sessions")
    assert (report.used, report.left) == (3, 1)
    with transaction.atomic():
        quotas.admit(owner)  # the fourth place is free
    Session.objects.create(user=owner, build=Build.objects.first(), hub_user=owner.hub_name,
                           provider="git", spec="x", status="ready")  # fmt: skip
    with transaction.atomic(), pytest.raises(quotas.QuotaExceeded):
        quotas.admit(owner)


def test_attendees_do_not_pay_and_the_workshop_does(repo):
    owner, attendee = UserFactory(), UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 10})
    Quota.objects.create(scope="user", user=attendee, values={"sessions": 1})
    w = built(workshop(owner, repo, seats=3))
    Session.objects.create(user=attendee, build=w.build, hub_user=attendee.hub_name,
                           provider="git", spec="x", status="ready")  # fmt: skip
    # the attendee's own session does not stop them taking a seat, nor the seat them
    # launching: a seat is the workshop's
    joined = services.join(w.code, user=attendee)
    guest = services.join(w.code, name="Guest")
    assert joined.session.user == attendee and joined.session.workshop == w
    assert quotas.usage_for(attendee).get("sessions").used == 1
    # their time is charged to the instructor's pool, not to the attendee nor to nobody
    start = timezone.now() - timedelta(minutes=10)
    Session.objects.filter(pk__in=[joined.session.pk, guest.session.pk]).update(
        status="stopped", ready_at=start, stopped_at=start + timedelta(minutes=5)
    )
    ledger.account_sessions()
    rows = UsageRecord.objects.filter(session__workshop=w)
    assert set(rows.values_list("user_id", "team_id", "scope")) == {(owner.pk, None, "personal")}
    assert ledger.seconds_used("session", ledger.period_of(timezone.now()), user_id=attendee.pk,
                               team_id=None) == 0  # fmt: skip


def test_a_team_workshop_draws_on_the_teams_pool(crew, repo):
    crew_quota = Quota.objects.create(scope="team", team=crew.team, values={"sessions": 3})
    with pytest.raises(quotas.QuotaExceeded):
        workshop(crew.admin, repo, seats=4, team=crew.team)
    w = built(workshop(crew.admin, repo, seats=3, team=crew.team))
    assert quotas.team_usage(crew.team).get("sessions").used == 3
    assert crew_quota.pk and w.team == crew.team
    with pytest.raises(quotas.QuotaExceeded), transaction.atomic():
        quotas.admit(crew.member, crew.team)


def test_a_closed_workshop_holds_nothing(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 3})
    w = built(workshop(owner, repo, seats=3))
    assert quotas.usage_for(owner).get("sessions").left == 0
    services.close_workshop(owner, w)
    assert quotas.usage_for(owner).get("sessions").left == 3


def test_adding_seats_must_still_fit_the_quota(repo):
    owner = UserFactory()
    Quota.objects.create(scope="user", user=owner, values={"sessions": 4})
    w = built(workshop(owner, repo, seats=3))
    services.update_workshop(owner, w, {"seats": 4})
    with pytest.raises(quotas.QuotaExceeded):
        services.update_workshop(owner, w, {"seats": 5})
    w.refresh_from_db()
    assert w.seats == 4
