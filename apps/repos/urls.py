from __future__ import annotations

from django.urls import path

from apps.repos import views

urlpatterns = [
    path("launch/", views.launch_form, name="repo-launch"),
    path("credentials/", views.credentials, name="credentials"),
    path(
        "credentials/<int:credential_id>/delete/", views.credential_delete, name="credential-delete"
    ),
]
