from __future__ import annotations

from django.urls import path

from apps.sessions import views

urlpatterns = [
    path("", views.dashboard, name="sessions"),
    path("<int:session_id>/", views.session_launch, name="session-launch"),
    path("<int:session_id>/open/", views.session_open, name="session-open"),
    path("<int:session_id>/stop/", views.session_stop, name="session-stop"),
]
