from __future__ import annotations

from django.urls import path

from apps.builds import views

urlpatterns = [
    path("", views.build_list, name="builds"),
    path("<int:build_id>/", views.build_detail, name="build"),
    path("<int:build_id>/cancel/", views.build_cancel, name="build-cancel"),
    path("repo/<slug:repo_slug>/", views.build_history, name="build-history"),
]
