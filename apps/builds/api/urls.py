from __future__ import annotations

from django.urls import path

from apps.builds.api import views

urlpatterns = [
    path("builds/", views.BuildListView.as_view(), name="api-builds"),
    path("builds/<int:build_id>/", views.BuildDetailView.as_view(), name="api-build"),
    path("builds/<int:build_id>/cancel/", views.BuildCancelView.as_view(), name="api-build-cancel"),
    path("builds/<int:build_id>/log/", views.BuildLogView.as_view(), name="api-build-log"),
    path("builds/<int:build_id>/events/", views.build_events, name="api-build-events"),
]
