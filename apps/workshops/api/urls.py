from __future__ import annotations

from django.urls import path

from apps.workshops.api import views

W = "workshops/<int:workshop_id>/"

urlpatterns = [
    path("workshops/", views.WorkshopListView.as_view(), name="api-workshops"),
    path("workshops/join/", views.JoinView.as_view(), name="api-workshop-join"),
    path("workshops/join/status/", views.JoinStatusView.as_view(),
         name="api-workshop-join-status"),
    path(W, views.WorkshopDetailView.as_view(), name="api-workshop"),
    path(W + "close/", views.WorkshopCloseView.as_view(), name="api-workshop-close"),
    path(W + "rotate-code/", views.WorkshopRotateCodeView.as_view(),
         name="api-workshop-rotate-code"),
    path(W + "update-environment/", views.WorkshopUpdateEnvironmentView.as_view(),
         name="api-workshop-update-environment"),
    path(W + "stop-all/", views.WorkshopStopAllView.as_view(), name="api-workshop-stop-all"),
    path(W + "roster/", views.RosterView.as_view(), name="api-workshop-roster"),
    path(W + "roster/<int:seat_id>/stop/", views.SeatStopView.as_view(),
         name="api-workshop-seat-stop"),
    path(W + "roster/<int:seat_id>/restart/", views.SeatRestartView.as_view(),
         name="api-workshop-seat-restart"),
]  # fmt: skip
