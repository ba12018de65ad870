from __future__ import annotations

from django.urls import path

from apps.repos.api import views

urlpatterns = [
    path("credentials/", views.CredentialListView.as_view(), name="api-credentials"),
    path(
        "credentials/<int:credential_id>/",
        views.CredentialDetailView.as_view(),
        name="api-credential",
    ),
]
