from __future__ import annotations

from django.urls import path

from apps.workshops.consumers import RosterConsumer

websocket_urlpatterns = [
    path("ws/workshops/<int:workshop_id>/", RosterConsumer.as_asgi()),
]
