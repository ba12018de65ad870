from __future__ import annotations

from importlib.metadata import version

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_control

BINDERY_VERSION = "0.1.0"


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"anonymous_launch": settings.BINDERY_ANONYMOUS_LAUNCH})


@cache_control(max_age=86400, public=True)
def badge(request: HttpRequest, logo: bool) -> HttpResponse:
    """The "launch binder" badges existing READMEs point at (/badge_logo.svg, /badge.svg)."""
    return render(request, "badges/badge.svg", {"logo": logo}, content_type="image/svg+xml")


def versions(request: HttpRequest) -> JsonResponse:
    """As mybinder's /versions: what builds and serves environments here, and (local
    backend) the Pythons a runtime.txt can ask for, each with the base set it gets, or
    (kubernetes backend) repo2docker's image."""
    from apps.builds.backends.base import builder_version

    body: dict[str, object] = {
        "binderhub": f"bindery-{BINDERY_VERSION}",
        "builder": builder_version(),
        "jupyterhub": version("jupyterhub"),
        "backend": settings.BINDERY_BACKEND,
    }
    if settings.BINDERY_BACKEND == "kubernetes":
        # mybinder's /versions names repo2docker's image the same way.
        body["builder_info"] = {"build_image": settings.BINDERY_K8S_BUILD_IMAGE}
    if settings.BINDERY_BACKEND == "local":
        from apps.builds.backends.local.interpreters import default_interpreter, usable_interpreters

        default = default_interpreter().minor
        body["pythons"] = [
            {"version": python.version, "default": python.minor == default, "base_set": base}
            for python, base in usable_interpreters()
        ]
    return JsonResponse(body)


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": "NOT_FOUND", "detail": "Not found."}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse(
            {"error": "SERVER_ERROR", "detail": "Something went wrong on our side."}, status=500
        )
    return render(request, "500.html", status=500)
