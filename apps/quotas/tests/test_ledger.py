"""The usage ledger: minute rows while sessions run, a row per build that ran, storage
measured; idempotent across killed workers and restarted beats; months in the site's time
zone; the month running out warns, then stops, and keeps the volume.

Real database rows and the real accounting functions; time is passed in (``now=``) rather
than waited for. Sessions here are rows (no hub): what is under test is the bookkeeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.quotas import ledger, services
from apps.quotas.models import Quota, UsageRecord
from apps.sessions.models import Session, SessionEvent, Volume
from apps.testing import requires

pytestmark = pytest.mark.django_db


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def a_build(user, key: str = "k", **fields) -> Build:
    defaults = dict(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key=key, status="ready", requested_by=user,
    )  # fmt: skip
    defaults.update(fields)
    return Build.objects.create(**defaults)


def a_session(user, *, ready_at: datetime, team=None, status="ready", **fields) -> Session:
    return Session.objects.create(
        user=user, team=team, build=a_build(user, f"s-{user.pk}-{ready_at:%H%M%S}"),
        hub_user=user.hub_name, provider="git", spec="x", status=status,
        ready_at=ready_at, created_at=ready_at - timedelta(seconds=5), **fields,
    )  # fmt: skip


def seconds_of(session: Session) -> float:
    total = UsageRecord.objects.filter(session=session).aggregate(t=Sum("quantity"))["t"]
    return float(total or 0)


def test_a_running_session_is_written_minute_by_minute_and_its_end_at_stop():
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-02T10:00:30"))
    assert ledger.account_session(session.pk, at("2026-12-02T10:05:10")) == 5
    # whole minutes only while it runs: 10:00:30 → 10:05:00
    assert seconds_of(session) == 270
    rows = list(UsageRecord.objects.filter(session=session).order_by("start"))
    assert rows[0].start == at("2026-12-02T10:00:30") and rows[0].quantity == 30
    assert all(r.quantity == 60 for r in rows[1:])
    assert {r.user_id for r in rows} == {user.pk} and {r.team_id for r in rows} == {None}
    # the stop writes the last, partial minute
    Session.objects.filter(pk=session.pk).update(status="stopped",
                                                 stopped_at=at("2026-12-02T10:07:20"))  # fmt: skip
    ledger.session_ended(session.pk)
    assert seconds_of(session) == 410  # 10:00:30 → 10:07:20
    session.refresh_from_db()
    assert session.accounted_until == at("2026-12-02T10:07:20")
    # and nothing more, however often it runs again
    assert ledger.account_session(session.pk, at("2026-12-02T11:00:00")) == 0
    assert seconds_of(session) == 410


def test_a_worker_killed_between_the_rows_and_the_cursor_neither_loses_nor_doubles(monkeypatch):
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-02T09:00:00"))

    def killed(session_id: int) -> None:
        raise SystemExit("worker killed")  # what SIGKILL leaves: rows in, cursor not moved

    monkeypatch.setattr(ledger, "_after_rows_written", killed)
    with pytest.raises(SystemExit):
        ledger.account_session(session.pk, at("2026-12-02T09:10:00"))
    # rows and cursor are one transaction: the kill left neither (nothing half-written)
    session.refresh_from_db()
    assert session.accounted_until is None and seconds_of(session) == 0
    monkeypatch.undo()
    # the next beat writes every minute since ready: no gap
    ledger.account_session(session.pk, at("2026-12-02T09:12:00"))
    assert seconds_of(session) == 720
    # and rows written by an earlier run whose cursor was lost are not doubled
    Session.objects.filter(pk=session.pk).update(accounted_until=None)
    assert ledger.account_session(session.pk, at("2026-12-02T09:12:00")) == 0
    assert seconds_of(session) == 720
    assert UsageRecord.objects.filter(session=session).count() == 12


def test_a_beat_that_was_down_catches_up_every_minute_it_missed():
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-02T08:00:00"))
    for minute in range(1, 6):  # beat runs each minute…
        ledger.account_sessions(at("2026-12-02T08:00:00") + timedelta(minutes=minute, seconds=2))
    assert seconds_of(session) == 300
    # …then is down for 25 minutes, and restarts
    ledger.account_sessions(at("2026-12-02T08:30:02"))
    assert seconds_of(session) == 1800
    minutes = sorted(r.start for r in UsageRecord.objects.filter(session=session))
    assert minutes == [at("2026-12-02T08:00:00") + timedelta(minutes=m) for m in range(30)]


def test_a_session_that_ended_while_beat_was_down_is_accounted_to_its_stop():
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-02T07:00:00"), status="stopped",
                        stopped_at=at("2026-12-02T07:20:30"))  # fmt: skip
    assert list(ledger.sessions_to_account()) == [session]
    ledger.account_sessions(at("2026-12-02T09:00:00"))
    assert seconds_of(session) == 20 * 60 + 30
    assert list(ledger.sessions_to_account()) == []


@requires(connection.vendor == "postgresql", reason="concurrent writers need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_stop_and_a_beat_at_once_write_each_minute_once():
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-02T06:00:00"))
    Session.objects.filter(pk=session.pk).update(status="stopped",
                                                 stopped_at=at("2026-12-02T06:45:15"))  # fmt: skip
    barrier = threading.Barrier(4)

    def account() -> None:
        try:
            barrier.wait()
            ledger.account_session(session.pk, at("2026-12-02T07:00:00"))
        finally:
            connection.close()

    threads = [threading.Thread(target=account) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seconds_of(session) == 45 * 60 + 15
    assert UsageRecord.objects.filter(session=session).count() == 46


def test_months_follow_the_site_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    # 03:00 UTC on 1 December is 22:00 on 30 November in New York
    assert ledger.period_of(at("2026-12-01T03:00:00")).label == "2026-11"
    assert ledger.period_of(at("2026-12-01T05:00:00")).label == "2026-12"
    user = UserFactory()
    session = a_session(user, ready_at=at("2026-12-01T04:58:00"), status="stopped",
                        stopped_at=at("2026-12-01T05:03:00"))  # fmt: skip
    ledger.account_session(session.pk)
    by_month = dict(
        UsageRecord.objects.filter(session=session).values_list("period")
        .annotate(total=Sum("quantity"))
    )  # fmt: skip
    assert {f"{k:%Y-%m}": v for k, v in by_month.items()} == {"2026-11": 120, "2026-12": 180}


def test_the_month_rolls_over_and_history_is_kept():
    user = UserFactory()
    now = datetime.now(UTC)
    this = ledger.period_of(now)
    last = this.previous()
    UsageRecord.objects.create(
        key="old", kind="session", period=last.first, start=last.start, end=last.start,
        quantity=5 * 3600, user=user,
    )  # fmt: skip
    Quota.objects.create(scope="user", user=user, values={"session_hours": 5})
    assert services.usage_for(user).get("session_hours").used == 0
    assert services.usage_for(user).get("session_hours").left == 5
    past = services.usage_for(user, period=last).get("session_hours")
    assert (past.used, past.allowed, past.left) == (5, 5, 0)


def test_a_build_that_ran_costs_its_minutes_and_a_reused_environment_nothing():
    from apps.builds.signals import build_finished

    user = UserFactory()
    build = a_build(user, "ran", status="ready", started_at=at("2026-12-02T10:00:00"),
                    finished_at=at("2026-12-02T10:03:30"))  # fmt: skip
    build_finished.send(sender=None, build_id=build.pk, status="ready")
    row = UsageRecord.objects.get(build=build)
    assert (row.kind, row.quantity, row.user_id, row.team_id) == ("build", 210, user.pk, None)
    build_finished.send(sender=None, build_id=build.pk, status="ready")  # sent twice: one row
    assert UsageRecord.objects.filter(build=build).count() == 1
    # a build whose worker died before the signal: beat writes it
    now = datetime.now(UTC)
    lost = a_build(user, "lost", status="failed", started_at=now - timedelta(minutes=9),
                   finished_at=now - timedelta(minutes=1))  # fmt: skip
    assert ledger.account_builds() == 1
    assert UsageRecord.objects.get(build=lost).quantity == pytest.approx(480, abs=1)
    # a build that never started (refused, cancelled while waiting) costs nothing
    never = a_build(user, "never", status="cancelled", finished_at=datetime.now(UTC))
    ledger.account_builds()
    assert not UsageRecord.objects.filter(build=never).exists()


def test_storage_is_measured_on_a_schedule_and_recorded(settings, tmp_path):
    settings.BINDERY_VOLUMES_DIR = tmp_path
    user = UserFactory()
    volume = Volume.objects.create(user=user)
    a_session(user, ready_at=datetime.now(UTC) - timedelta(minutes=3))
    home = tmp_path / volume.relative_path
    home.mkdir(parents=True)
    (home / "data.bin").write_bytes(b"x" * 300_000)
    assert ledger.measure_volumes_in_use() == 1
    volume.refresh_from_db()
    assert volume.size_bytes >= 300_000
    row = UsageRecord.objects.get(volume=volume, kind="storage")
    assert row.quantity == volume.size_bytes and row.user_id == user.pk
    ledger.measure_volumes_in_use()  # the same slot: still one row
    assert UsageRecord.objects.filter(volume=volume).count() == 1
    assert services.usage_for(user).get("storage").used == volume.size_bytes


def test_the_ledger_is_append_only():
    row = UsageRecord.objects.create(key="k1", kind="session", period=datetime(2026, 12, 1).date(),
                                     start=at("2026-12-02T10:00:00"),
                                     end=at("2026-12-02T10:01:00"), quantity=60)  # fmt: skip
    row.quantity = 1
    with pytest.raises(RuntimeError):
        row.save()


def test_the_month_running_out_warns_then_stops_and_keeps_the_volume(settings):
    settings.BINDERY_QUOTA_WARN_MINUTES = 10
    user = UserFactory()
    Quota.objects.create(scope="user", user=user, values={"session_hours": 1})
    volume = Volume.objects.create(user=user, size_bytes=12345)
    now = datetime.now(UTC)
    session = a_session(user, ready_at=now - timedelta(seconds=30))
    period = ledger.period_of(now)
    UsageRecord.objects.create(key="used", kind="session", period=period.first,
                               start=period.start, end=period.start,
                               quantity=3600 - 5 * 60, user=user)  # fmt: skip
    # five minutes left: a warning, once
    report = services.enforce_session_hours()
    assert report == {"warned": [session.pk], "stopped": []}
    assert services.enforce_session_hours() == {"warned": [], "stopped": []}
    warning = SessionEvent.objects.get(session=session, phase="quota")
    assert "minutes of session hours left" in warning.message
    session.refresh_from_db()
    assert session.quota_warned_at is not None and session.status == "ready"
    # then the hours are used up: the session is asked to stop
    UsageRecord.objects.create(key="more", kind="session", period=period.first,
                               start=period.start, end=period.start, quantity=5 * 60,
                               user=user)  # fmt: skip
    assert services.enforce_session_hours()["stopped"] == [session.pk]
    session.refresh_from_db()
    assert session.status == "stopping"
    assert "session hours are used up" in session.events.last().message
    volume.refresh_from_db()
    assert volume.size_bytes == 12345  # the volume is untouched
    # a new launch is refused until the month turns
    from django.db import transaction

    with transaction.atomic(), pytest.raises(services.QuotaExceeded) as refused:
        services.admit(user)
    assert refused.value.data["limit"] == "session_hours"
    assert refused.value.data["resets_at"] == period.end.isoformat()


def test_time_not_yet_in_the_ledger_counts_towards_what_is_left():
    user = UserFactory()
    a_session(user, ready_at=datetime.now(UTC) - timedelta(minutes=30))
    used = services.usage_for(user).get("session_hours").used
    assert used == pytest.approx(0.5, abs=0.01)
