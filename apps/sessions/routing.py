from __future__ import annotations

from django.urls import path

from apps.sessions.consumers import LaunchConsumer

websocket_urlpatterns = [
    path("ws/launches/<int:session_id>/", LaunchConsumer.as_asgi()),
]
