from __future__ import annotations

from django.urls import path

from apps.sessions.api import views

urlpatterns = [
    path("sessions/", views.SessionListView.as_view(), name="api-sessions"),
    path("sessions/<int:session_id>/", views.SessionDetailView.as_view(), name="api-session"),
    path(
        "sessions/<int:session_id>/keepalive/",
        views.SessionKeepaliveView.as_view(),
        name="api-session-keepalive",
    ),
    path("sessions/<int:session_id>/events/", views.session_events, name="api-session-events"),
    path("volumes/", views.VolumeListView.as_view(), name="api-volumes"),
    path("volumes/<int:volume_id>/", views.VolumeDetailView.as_view(), name="api-volume"),
    path(
        "volumes/<int:volume_id>/archive/",
        views.VolumeArchiveView.as_view(),
        name="api-volume-archive",
    ),
]
