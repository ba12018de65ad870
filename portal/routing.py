from __future__ import annotations

from typing import Any

from apps.builds.routing import websocket_urlpatterns as build_patterns
from apps.sessions.routing import websocket_urlpatterns as launch_patterns
from apps.workshops.routing import websocket_urlpatterns as workshop_patterns

websocket_urlpatterns: list[Any] = [*build_patterns, *launch_patterns, *workshop_patterns]
