"""Reads of builds that also authorize.

A public build (no credential) is visible to every signed-in user: it shows public
content. A private build is visible only to people who could use its credential.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet

from apps.builds.models import Build, BuildLogLine
from apps.repos.selectors import usable_credentials
from portal.errors import NotFound
from portal.utils import as_id


def visible_builds(user: Any) -> QuerySet[Build]:
    if not getattr(user, "is_authenticated", False):
        if settings.BINDERY_ANONYMOUS_LAUNCH:
            return Build.objects.filter(scope="")
        return Build.objects.none()
    return Build.objects.filter(Q(scope="") | Q(credential__in=usable_credentials(user)))


def get_build_for_user(user: Any, build_id: int | str) -> Build:
    build = visible_builds(user).select_related("requested_by").filter(pk=as_id(build_id)).first()
    if build is None:
        raise NotFound("No such build.")
    return build


def log_lines(build: Build, after: int = 0, limit: int = 1000) -> QuerySet[BuildLogLine]:
    return BuildLogLine.objects.filter(build=build, n__gt=after).order_by("n")[:limit]


def environment_keys_in_use() -> set[str]:
    """Keys of environments that running or starting sessions use, or that a workshop not
    yet closed was built for (never pruned)."""
    from apps.sessions.selectors import environment_keys_in_use as in_sessions
    from apps.workshops.selectors import environment_keys_reserved

    return in_sessions() | environment_keys_reserved()
