"""System checks for the quota settings: a malformed default or ceiling is named at start,
not found by the first launch."""

from __future__ import annotations

import json
from typing import Any

from django.core import checks

from apps.quotas.limits import InvalidLimit, site_ceilings, site_defaults


@checks.register()
def quota_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for what, read in (("BINDERY_QUOTA_CEILINGS", site_ceilings),
                       ("quota defaults", lambda: site_defaults("team"))):  # fmt: skip
        try:
            read()
        except (InvalidLimit, json.JSONDecodeError, ValueError) as exc:
            errors.append(
                checks.Error(
                    f"The {what} setting is not usable: {exc}",
                    hint="A JSON object of limit names (sessions, cpu, memory, session_hours, "
                    "build_minutes, storage, builds) to numbers or null; sizes like 2G for "
                    "BINDERY_SESSION_MEMORY and BINDERY_VOLUME_STORAGE.",
                    id="bindery.E040",
                )
            )
    return errors
