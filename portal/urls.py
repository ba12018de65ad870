from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import health, views

api_v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.teams.api.urls")),
    path("", include("apps.repos.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("health", health.health, name="health"),
    path("accounts/", include("allauth.urls")),
    path("account/", include("apps.accounts.urls")),
    path("teams/", include("apps.teams.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
