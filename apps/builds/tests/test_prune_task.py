"""Beat prunes environments on a schedule (the same pruning as ``manage.py prune_builds``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.builds.tasks import prune_environments

pytestmark = pytest.mark.django_db


def test_beat_prunes_unfinished_environments_and_keeps_ready_ones(
    settings: Any, tmp_path: Path
) -> None:
    settings.BINDERY_ENVS_DIR = tmp_path / "envs"
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    settings.BINDERY_BUILD_DISK_BUDGET = "1G"
    unfinished = tmp_path / "envs" / ("a" * 32)  # a killed build's: no ready record
    unfinished.mkdir(parents=True)
    (unfinished / "pyvenv.cfg").write_text("home = /usr/bin\n")
    ready = tmp_path / "envs" / ("b" * 32)
    ready.mkdir()
    (ready / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "envs" / f"{'b' * 32}.json").write_text('{"key": "bbb"}')
    (tmp_path / "envs" / f"{'a' * 32}.overlay").mkdir()  # goes with its environment

    assert prune_environments.apply().get() == 1

    assert not unfinished.exists() and not (tmp_path / "envs" / f"{'a' * 32}.overlay").exists()
    assert ready.is_dir()
    assert prune_environments.apply().get() == 0  # safe to run twice


def test_the_schedule_runs_it() -> None:
    tasks = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert "apps.builds.tasks.prune_environments" in tasks
