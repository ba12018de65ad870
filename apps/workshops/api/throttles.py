"""Joining by code is open to anyone, and codes are short (22**6): joins are counted per
client address in the cache (Redis, shared by every web process) so nobody walks the codes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class JoinRateThrottle(SimpleRateThrottle):
    """``BINDERY_WORKSHOP_JOIN_RATE`` joins per client address ("60/min"; empty: none).

    REMOTE_ADDR, not X-Forwarded-For (DRF's default ident): a client chooses the latter,
    so it would undo the limit (as ``portal.adminlogin`` reasons)."""

    scope = "workshop-join"

    def get_rate(self) -> str | None:
        # read per request, not at import as DRF's THROTTLE_RATES are: a setting of its own
        return str(settings.BINDERY_WORKSHOP_JOIN_RATE or "") or None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {
            "scope": self.scope,
            "ident": request.META.get("REMOTE_ADDR", "") or "unknown",
        }
