"""Helpers for long-lived HTTP responses (text/event-stream) served by async views."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, StreamingHttpResponse

from apps.accounts.services import (
    TokenRejected,
    authenticate_api_token,
    parse_authorization_header,
)


async def authenticate(request: HttpRequest) -> Any:
    """The user of a request: ``Authorization: token/Bearer`` first, else the session.

    Raises TokenRejected for a bad token (answer 401, do not fall back to the cookie).
    """
    header = request.headers.get("Authorization", "")
    if header:
        raw = parse_authorization_header(header)
        if raw is not None:
            user, _ = await database_sync_to_async(authenticate_api_token)(raw)
            return user
    session_user = await request.auser()
    return session_user if session_user.is_authenticated else AnonymousUser()


def sse(data: Any, *, event: str = "", id: int | None = None) -> str:
    parts = []
    if id is not None:
        parts.append(f"id: {id}")
    if event:
        parts.append(f"event: {event}")
    parts.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(parts) + "\n\n"


def event_stream(body: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"  # nginx: do not hold events back
    return response


def accepts_event_stream(request: HttpRequest) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


__all__ = ["TokenRejected", "accepts_event_stream", "authenticate", "event_stream", "sse"]
