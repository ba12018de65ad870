"""API plumbing shared by every app: the error shape, pagination."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.accounts.models import User
from portal.errors import BinderyError

# DRF's own exception classes mapped to our stable codes.
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.AuthenticationFailed: "AUTHENTICATION_FAILED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "THROTTLED",
    exceptions.ParseError: "MALFORMED_REQUEST",
    exceptions.ValidationError: "VALIDATION_ERROR",
}


def _code_for(exc: exceptions.APIException) -> str:
    # An authentication class may set a precise code (TOKEN_EXPIRED...) via ``get_codes``.
    codes = exc.get_codes()
    if isinstance(codes, str) and codes.isupper():
        return codes
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return "ERROR"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, BinderyError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        first = next(iter(fields.values()), ["Invalid input."])
        sentence = first[0] if isinstance(first, list) and first else "Invalid input."
        body: dict[str, Any] = {
            "error": "VALIDATION_ERROR",
            "detail": str(sentence) if isinstance(sentence, str) else "Invalid input.",
            "fields": fields,
        }
    else:
        body = {"error": _code_for(exc), "detail": str(exc.detail)}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            body["retry_after"] = int(wait)
    response.data = body
    return response


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


def current_user(request: HttpRequest | Request) -> User:
    """The signed-in user of a view that requires authentication."""
    user = request.user
    if not isinstance(user, User):  # the view's permission check lets no anonymous user here
        raise exceptions.NotAuthenticated()
    return user
