from __future__ import annotations

from django.urls import path

from apps.sessions import team_views
from apps.teams import views

urlpatterns = [
    path("", views.team_list, name="teams"),
    path("join/<str:token>/", views.join, name="team-join"),
    path("<slug:slug>/", views.team_detail, name="team"),
    path(
        "<slug:slug>/sessions/<int:session_id>/stop/",
        team_views.team_session_stop,
        name="team-session-stop",
    ),
    path(
        "<slug:slug>/sessions/stop-all/",
        team_views.team_sessions_stop_all,
        name="team-sessions-stop-all",
    ),
    path("<slug:slug>/<str:action>/", views.team_action, name="team-action"),
]
