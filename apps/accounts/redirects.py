"""Where to go after signing in or up: the ``next`` a page was given, kept only when it is
a path on this site.

A shared ``/v2/`` link is the usual ``next`` and carries percent-encoded parts
(``git/https%3A%2F%2F…``); it is passed along exactly as given, never decoded again.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from allauth.account.adapter import get_adapter
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest


def is_same_site_path(url: str) -> bool:
    """A relative path on this site: ``/…``, never ``//host``, ``/\\host``, a scheme or a
    host, nor control characters a browser would strip before reading it."""
    if not url.startswith("/") or url.startswith(("//", "/\\")):
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def safe_next(request: HttpRequest | None) -> str:
    """The request's ``next`` (form field, then query) when it is a same-site path that
    allauth would also follow; "" otherwise."""
    if request is None:
        return ""
    value = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME) or ""
    if not is_same_site_path(value) or not get_adapter(request).is_safe_url(value):
        return ""
    return value


def with_next(url: str, next_url: str) -> str:
    """``url`` with ``?next=`` (or ``&next=``) added; ``url`` alone without one."""
    if not next_url:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urlencode({REDIRECT_FIELD_NAME: next_url})}"
