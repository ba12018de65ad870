"""The mybinder.org-compatible surface: /build/ event stream, badges, /versions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from apps.sessions import services
from apps.sessions.models import Session
from apps.sessions.owners import anonymous_owner
from apps.sessions.streams import follow_session
from portal.errors import BinderyError
from portal.streaming import TokenRejected, accepts_event_stream, authenticate, event_stream
from portal.utils import raw_path_spec

PHASE_OF_LINE = {"fetching": "fetching", "building": "building", "built": "building"}


def _data(payload: dict[str, Any]) -> str:
    return "data: " + json.dumps(payload, separators=(",", ":")) + "\n\n"


def ready_payload(session: Session, message: str) -> dict[str, Any]:
    resolved = session.build.resolved
    return {
        "phase": "ready",
        "message": message + "\n",
        "url": session.url,
        "token": services.session_token(session),
        "image": f"bindery-env:{session.environment_key[:16]}",
        "repo_url": resolved.get("repo_url", ""),
        "binder_ref_url": resolved.get("ref_url", ""),
        "binder_launch_host": settings.SITE_URL + "/",
        "binder_request": f"v2/{session.provider}/{session.spec}",
        "binder_persistent_request": f"v2/{resolved.get('persistent_spec', '')}",
    }


async def mybinder_events(session: Session) -> AsyncIterator[str]:
    """Translate a session's stream into mybinder's ``data: {phase, message}`` lines."""
    async for item in follow_session(session.pk, keepalive=10.0):
        kind = item["kind"]
        if kind == "keepalive":
            yield ":keepalive\n\n"
        elif kind == "log":
            phase = PHASE_OF_LINE.get(item["phase"], "building")
            yield _data({"phase": phase, "message": item["text"] + "\n"})
        elif kind == "event":
            phase = item["phase"]
            if phase == "ready":
                row = await Session.objects.select_related("build").aget(pk=session.pk)
                yield _data(await database_sync_to_async(ready_payload)(row, item["message"]))
            elif phase in ("waiting", "built", "launching", "failed"):
                payload: dict[str, Any] = {"phase": phase, "message": item["message"] + "\n"}
                if phase == "built":
                    payload["imageName"] = f"bindery-env:{session.environment_key[:16]}"
                yield _data(payload)
            elif phase in ("stopped", "stopping"):
                yield _data({"phase": "failed", "message": item["message"] + "\n"})
        elif kind == "failed":  # the stream itself cannot go on (STREAM_UNAVAILABLE)
            yield _data({"phase": "failed", "message": item["detail"] + "\n",
                         "code": item["error"]})  # fmt: skip


async def _failed(error: BinderyError) -> AsyncIterator[str]:
    yield _data({"phase": "failed", "message": error.message + "\n", "code": error.code})


async def build_stream(request: HttpRequest, provider: str, spec: str) -> HttpResponseBase:
    """GET /build/<provider>/<spec>: build and launch, streaming mybinder's events."""
    if not accepts_event_stream(request):
        return JsonResponse(
            {"error": "NOT_ACCEPTABLE",
             "detail": "This endpoint streams events: send Accept: text/event-stream."},
            status=400,
        )  # fmt: skip
    try:
        user = await authenticate(request)
    except TokenRejected as exc:
        return JsonResponse(exc.as_dict(), status=401)
    anonymous = not user.is_authenticated
    if anonymous and not settings.BINDERY_ANONYMOUS_LAUNCH:
        return JsonResponse(
            {"error": "NOT_AUTHENTICATED", "detail": "Sign in or send an API token to launch."},
            status=401,
        )
    cross_site = request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")
    if cross_site and not request.headers.get("Authorization"):
        # A page elsewhere (a user server on another port of this host counts: same-site)
        # could open an EventSource with the visitor's cookies and start code with their
        # volumes mounted. API tokens, and the portal's own pages, are not refused.
        return JsonResponse(
            {"error": "CROSS_SITE_LAUNCH",
             "detail": "Launches from other sites need an API token, or open the /v2/ link."},
            status=403,
        )  # fmt: skip
    owner = await database_sync_to_async(anonymous_owner)(request.session) if anonymous else ""
    spec = raw_path_spec(request, f"/build/{provider}/", spec)
    try:
        urlpath = services.clean_urlpath(
            request.GET.get("urlpath", ""), request.GET.get("labpath", ""),
            request.GET.get("filepath", ""),
        )  # fmt: skip
        session = await database_sync_to_async(services.launch)(
            None if anonymous else user, spec=f"{provider}/{spec}", urlpath=urlpath,
            anonymous_owner=owner,
        )  # fmt: skip
    except BinderyError as exc:
        return event_stream(_failed(exc))
    session = await Session.objects.select_related("build").aget(pk=session.pk)
    return event_stream(mybinder_events(session))
