"""``{% entrance_url "account_login" %}``: a sign-in or sign-up link that keeps ``next``."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from apps.accounts.redirects import is_same_site_path, safe_next, with_next

register = template.Library()


@register.simple_tag(takes_context=True)
def entrance_url(context: template.Context, name: str) -> str:
    """The URL named ``name`` with ``next``: the page's own ``next`` when it is a same-site
    path, else the page's ``login_next`` (a /v2/ page's own raw address)."""
    request: Any = context.get("request")
    next_url = safe_next(request)
    if not next_url:
        fallback = context.get("login_next") or ""
        next_url = fallback if is_same_site_path(fallback) else ""
    return with_next(reverse(name), next_url)
