"""Teams in these tests have a roomy ceiling (as if staff had raised it), so what is under
test is the pool, the caps and the levels the tests set; tests of the default ceiling (what
one person has) ask for ``default_team_ceiling``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.quotas.limits import NAMES


@pytest.fixture
def default_team_ceiling() -> None:
    """Keep the site's default team ceiling (a person's defaults)."""


@pytest.fixture(autouse=True)
def _roomy_team_ceiling(request: pytest.FixtureRequest, settings: Any) -> None:
    if "default_team_ceiling" not in request.fixturenames:
        settings.BINDERY_QUOTA_TEAM_CEILING = json.dumps(dict.fromkeys(NAMES))
