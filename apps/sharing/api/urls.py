from __future__ import annotations

from django.urls import path

from apps.sharing.api import views

urlpatterns = [
    path(
        "teams/<slug:slug>/environments/",
        views.TeamEnvironmentListView.as_view(),
        name="api-team-environments",
    ),
    path(
        "teams/<slug:slug>/environments/<int:environment_id>/",
        views.TeamEnvironmentDetailView.as_view(),
        name="api-team-environment",
    ),
    path(
        "teams/<slug:slug>/environments/<int:environment_id>/launch/",
        views.TeamEnvironmentLaunchView.as_view(),
        name="api-team-environment-launch",
    ),
    path("shares/", views.ShareLinkListView.as_view(), name="api-shares"),
    path("shares/launch/", views.ShareLinkLaunchView.as_view(), name="api-share-launch"),
    path("shares/<int:link_id>/", views.ShareLinkDetailView.as_view(), name="api-share"),
]
