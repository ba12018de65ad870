"""Usage and quota pages. Included before ``teams/`` in portal/urls.py: the team paths here
would otherwise be taken by the team page's ``<slug>/<action>/`` form actions."""

from __future__ import annotations

from django.urls import path

from apps.quotas import views

urlpatterns = [
    path("account/usage/", views.usage, name="usage"),
    path("account/usage/preview/", views.launch_preview, name="launch-preview"),
    path("teams/<slug:slug>/usage.csv", views.team_usage_csv, name="team-usage-csv"),
    path("teams/<slug:slug>/quota/", views.team_quota, name="team-quota"),
    path(
        "teams/<slug:slug>/members/<int:membership_id>/quota/",
        views.member_quota,
        name="member-quota",
    ),
]
