"""Workshop pages: the instructor's under /workshops/, the attendee's /join and /w/<code>
(included at the root by portal/urls.py)."""

from __future__ import annotations

from django.urls import path

from apps.workshops import views

urlpatterns = [
    path("workshops/", views.workshop_list, name="workshops"),
    path("workshops/<int:workshop_id>/", views.workshop_detail, name="workshop"),
    path("workshops/<int:workshop_id>/qr.svg", views.qr_code, name="workshop-qr"),
    path("workshops/<int:workshop_id>/roster.csv", views.roster_csv, name="workshop-roster-csv"),
    path("workshops/<int:workshop_id>/seats/<int:seat_id>/files/", views.seat_files,
         name="workshop-seat-files"),
    path("workshops/<int:workshop_id>/seats/<int:seat_id>/<str:action>/", views.seat_action,
         name="workshop-seat-action"),
    path("workshops/<int:workshop_id>/<str:action>/", views.workshop_action,
         name="workshop-action"),
    path("join", views.enter, name="workshop-enter"),
    path("w/<str:code>", views.join_page, name="workshop-join"),
    path("w/<str:code>/status", views.join_status, name="workshop-join-status"),
]  # fmt: skip
