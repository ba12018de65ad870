"""`manage.py prune_builds` keeps what sessions use, against real environments built by the
local builder (see test_local_builder.py for the ordering rules of disk.prune itself)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_report_only_lists_entries(settings, tmp_path):
    settings.BINDERY_ENVS_DIR = tmp_path / "envs"
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    out = StringIO()
    call_command("prune_builds", "--report", stdout=out)
    assert out.getvalue().strip().endswith("total 0\xa0bytes")


def test_bad_budget_is_a_clear_error(settings, tmp_path):
    from django.core.management import CommandError

    settings.BINDERY_ENVS_DIR = tmp_path / "envs"
    settings.BINDERY_CHECKOUTS_DIR = tmp_path / "checkouts"
    with pytest.raises(CommandError, match="Not a size"):
        call_command("prune_builds", "--budget", "lots", stdout=StringIO())
