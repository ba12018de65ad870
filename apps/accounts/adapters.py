"""The allauth account adapter: ``next`` survives sign-up's email verification."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailConfirmation
from django.http import HttpRequest

from apps.accounts.redirects import is_same_site_path, safe_next, with_next


class AccountAdapter(DefaultAccountAdapter):
    def is_safe_url(self, url: str) -> bool:
        """Only paths on this site: after signing in, nobody is sent to another host, even
        one in ALLOWED_HOSTS (allauth's default)."""
        return is_same_site_path(url) and super().is_safe_url(url)

    def get_email_confirmation_url(
        self, request: HttpRequest, emailconfirmation: EmailConfirmation
    ) -> str:
        """The emailed link carries the sign-up's ``next``: whoever opens it where the
        sign-up's session is gone (another browser, the session expired) signs in and still
        lands on the link they came for."""
        url = super().get_email_confirmation_url(request, emailconfirmation)
        return with_next(url, safe_next(request))
