from __future__ import annotations

from django.urls import path

from apps.quotas.api import views

urlpatterns = [
    path("usage/", views.UsageView.as_view(), name="api-usage"),
    path("teams/<slug:slug>/usage/", views.TeamUsageView.as_view(), name="api-team-usage"),
    path("teams/<slug:slug>/usage.csv", views.TeamUsageCsvView.as_view(),
         name="api-team-usage-csv"),
    path("teams/<slug:slug>/quota/", views.TeamQuotaView.as_view(), name="api-team-quota"),
    path("teams/<slug:slug>/ceiling/", views.TeamCeilingView.as_view(), name="api-team-ceiling"),
    path("teams/<slug:slug>/memberships/<int:membership_id>/quota/",
         views.MemberQuotaView.as_view(), name="api-member-quota"),
    path("users/<int:user_id>/quota/", views.UserQuotaView.as_view(), name="api-user-quota"),
]  # fmt: skip
