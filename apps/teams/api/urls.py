from __future__ import annotations

from django.urls import path

from apps.sessions.api.views import TeamSessionListView
from apps.teams.api import views

urlpatterns = [
    path("teams/", views.TeamListView.as_view(), name="api-teams"),
    path("teams/<slug:slug>/", views.TeamDetailView.as_view(), name="api-team"),
    path("teams/<slug:slug>/leave/", views.LeaveView.as_view(), name="api-team-leave"),
    path(
        "teams/<slug:slug>/memberships/", views.MembershipListView.as_view(), name="api-memberships"
    ),
    path(
        "teams/<slug:slug>/memberships/<int:membership_id>/",
        views.MembershipDetailView.as_view(),
        name="api-membership",
    ),
    path(
        "teams/<slug:slug>/invitations/", views.InvitationListView.as_view(), name="api-invitations"
    ),
    path(
        "teams/<slug:slug>/invitations/<int:invitation_id>/",
        views.InvitationDetailView.as_view(),
        name="api-invitation",
    ),
    path("teams/<slug:slug>/sessions/", TeamSessionListView.as_view(), name="api-team-sessions"),
    path("invitations/accept/", views.AcceptInvitationView.as_view(), name="api-invitation-accept"),
]
