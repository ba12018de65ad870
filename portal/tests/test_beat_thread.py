"""``celery worker --beat-thread``: beat as a thread of the worker (portal/beat_thread.py),
against the real Redis broker and a real (in-process, threads pool) Celery worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from portal.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

ran = threading.Event()


@celery_app.task(name="portal.tests.test_beat_thread.probe")
def probe() -> None:
    ran.set()


@pytest.fixture
def probe_schedule() -> Iterator[None]:
    """Only the probe, every half second, instead of the portal's schedule."""
    saved = celery_app.conf.beat_schedule
    celery_app.conf.beat_schedule = {
        "probe": {"task": "portal.tests.test_beat_thread.probe", "schedule": 0.5}
    }
    ran.clear()
    try:
        yield
    finally:
        celery_app.conf.beat_schedule = saved


def beat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "Beat"]


def test_the_worker_runs_beat_in_a_thread_of_its_own(probe_schedule: None, tmp_path: Path) -> None:
    assert not beat_threads()
    with start_worker(
        celery_app,
        pool="threads",
        perform_ping_check=False,
        loglevel="WARNING",
        beat_thread=True,
        schedule_filename=str(tmp_path / "schedule"),
    ):
        # beat, in this very process, puts the probe on the queue; the worker runs it
        assert ran.wait(30), "beat never sent the probe"
        assert len(beat_threads()) == 1
        assert list(tmp_path.glob("schedule*"))  # its schedule file is the worker's --schedule
    assert not beat_threads()  # it stops with the worker


def test_without_the_flag_the_worker_has_no_beat(probe_schedule: None) -> None:
    with start_worker(celery_app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
        assert not beat_threads()
