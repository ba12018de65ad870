from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from portal.errors import BinderyError


class BinderyErrorMiddleware:
    """Pages raise the same domain errors as the API; people get the same message."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, BinderyError):
            return None
        if request.path.startswith("/api/"):
            return JsonResponse(exc.as_dict(), status=exc.status)
        return render(request, "error.html", {"error": exc}, status=exc.status)


class ContentSecurityPolicyMiddleware:
    """Send ``settings.BINDERY_CSP`` on every response. Pages have no inline script (their
    data comes through ``json_script``), so an injected ``<script>`` never runs. The launch
    and build pages' websockets go to this host: ``ws://`` and ``wss://`` of the request's
    host are added to connect-src (browsers that predate CSP 3 do not match them to 'self')."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request)
        return response


def content_security_policy(request: HttpRequest) -> str:
    policy = {name: list(values) for name, values in settings.BINDERY_CSP.items()}
    try:
        host = request.get_host()
    except Exception:  # DisallowedHost: the error page still gets the policy, without it
        host = ""
    if host:
        schemes = ("wss",) if request.is_secure() else ("ws", "wss")
        policy.setdefault("connect-src", ["'self'"]).extend(f"{s}://{host}" for s in schemes)
    return "; ".join(" ".join([name, *values]) for name, values in policy.items())
