"""The /admin/ sign-in, rate-limited: ``BINDERY_ADMIN_LOGIN_ATTEMPTS`` failures per client
address and user name within ``BINDERY_ADMIN_LOGIN_WINDOW`` seconds answer 429 until the
window ends. Counts live in the cache (Redis), so every web process shares them."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import admin
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from portal.errors import BinderyError


class LoginRateLimited(BinderyError):
    code = "LOGIN_RATE_LIMITED"
    status = 429
    default_message = "Too many failed sign-in attempts. Wait a few minutes and try again."


def _key(request: HttpRequest) -> str:
    # REMOTE_ADDR, not X-Forwarded-For: a client chooses the latter. Behind a proxy every
    # client shares the proxy's address, and the user name still keeps the counts apart.
    who = f"{request.META.get('REMOTE_ADDR', '')}\n{request.POST.get('username', '').lower()}"
    return "admin-login-failures:" + hashlib.sha256(who.encode()).hexdigest()


@never_cache
def admin_login(
    request: HttpRequest, extra_context: dict[str, object] | None = None
) -> HttpResponse:
    """``admin.site.login`` behind the failure count (the count grows only on a POST that
    did not sign in; a success clears it)."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    key = _key(request)
    if int(cache.get(key, 0)) >= settings.BINDERY_ADMIN_LOGIN_ATTEMPTS:
        error = LoginRateLimited()
        return render(request, "error.html", {"error": error}, status=error.status)
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated and request.user.is_staff:
        cache.delete(key)
    else:
        # add then incr: the window starts at the first failure and is not extended.
        if not cache.add(key, 1, timeout=settings.BINDERY_ADMIN_LOGIN_WINDOW):
            try:
                cache.incr(key)
            except ValueError:  # expired between the two calls
                cache.add(key, 1, timeout=settings.BINDERY_ADMIN_LOGIN_WINDOW)
    return response
