"""DRF authentication with personal API tokens (``token`` or ``Bearer`` scheme)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from apps.accounts.services import TokenRejected, authenticate_api_token, parse_authorization_header


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "token"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        try:
            raw = parse_authorization_header(header)
            if raw is None:
                return None
            return authenticate_api_token(raw)
        except TokenRejected as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from None

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="api"'
