from __future__ import annotations

from django.urls import path

from apps.teams import views

urlpatterns = [
    path("", views.team_list, name="teams"),
    path("join/<str:token>/", views.join, name="team-join"),
    path("<slug:slug>/", views.team_detail, name="team"),
    path("<slug:slug>/<str:action>/", views.team_action, name="team-action"),
]
