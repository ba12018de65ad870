from __future__ import annotations

from django.urls import path

from apps.sharing import views

urlpatterns = [
    path(
        "teams/<slug:slug>/environments/add/",
        views.team_environment_add,
        name="team-environment-add",
    ),
    path(
        "teams/<slug:slug>/environments/<int:environment_id>/launch/",
        views.team_environment_launch,
        name="team-environment-launch",
    ),
    path(
        "teams/<slug:slug>/environments/<int:environment_id>/delete/",
        views.team_environment_delete,
        name="team-environment-delete",
    ),
    path("s/", views.share_links, name="share-links"),
    path("s/<int:link_id>/revoke/", views.share_link_revoke, name="share-link-revoke"),
    path("s/<str:token>", views.share_link, name="share-link"),
]
