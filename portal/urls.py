from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.sessions import mybinder
from apps.sessions import views as sessions_views
from portal import adminlogin, health, views

api_v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.teams.api.urls")),
    path("", include("apps.repos.api.urls")),
    path("", include("apps.builds.api.urls")),
    path("", include("apps.sessions.api.urls")),
    path("", include("apps.quotas.api.urls")),
    path("", include("apps.sharing.api.urls")),
    path("", include("apps.workshops.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("health", health.health, name="health"),
    path("accounts/", include("allauth.urls")),
    path("account/", include("apps.accounts.urls")),
    path("", include("apps.quotas.urls")),  # /account/usage/, teams' usage.csv and quota
    path("teams/", include("apps.teams.urls")),
    path("builds/", include("apps.builds.urls")),
    path("repos/", include("apps.repos.urls")),
    path("sessions/", include("apps.sessions.urls")),
    path("", include("apps.sharing.urls")),  # /s/ share links, team environments
    path("", include("apps.workshops.urls")),  # /workshops/, and attendees' /join, /w/<code>
    path("volumes/", sessions_views.volumes, name="volumes"),
    path("volumes/<int:volume_id>/delete/", sessions_views.volume_delete, name="volume-delete"),
    path("launch-link", sessions_views.launch_link, name="launch-link"),
    # mybinder.org-compatible surface
    path("v2/<str:provider>/<path:spec>", sessions_views.launch_page, name="launch"),
    path("build/<str:provider>/<path:spec>", mybinder.build_stream, name="build-stream"),
    path("badge_logo.svg", views.badge, {"logo": True}, name="badge-logo"),
    path("badge.svg", views.badge, {"logo": False}, name="badge"),
    path("versions", views.versions, name="versions"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file: the Content-Security-Policy allows no inline one.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/login/", adminlogin.admin_login, name="admin-login"),  # rate-limited
    path("admin/", admin.site.urls),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
