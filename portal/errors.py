"""The one error type every domain error subclasses.

An error carries a stable machine code, an HTTP status and a sentence for people. The API
renders it as ``{"error": CODE, "detail": message, **data}``; pages show the message.
"""

from __future__ import annotations

from typing import Any


class BinderyError(Exception):
    code = "ERROR"
    status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, code: str | None = None, **data: Any):
        self.message = message or self.default_message
        if code:
            self.code = code
        self.data = data
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.message, **self.data}


class InvalidInput(BinderyError):
    code = "INVALID_INPUT"
    status = 400


def invalid_field(field: str, message: str) -> InvalidInput:
    """A VALIDATION_ERROR naming one field, in the shape DRF's validation errors have."""
    return InvalidInput(message, code="VALIDATION_ERROR", fields={field: [message]})


class NotFound(BinderyError):
    code = "NOT_FOUND"
    status = 404
    default_message = "Not found."


class PermissionDenied(BinderyError):
    code = "PERMISSION_DENIED"
    status = 403
    default_message = "You do not have permission to do this."


class Conflict(BinderyError):
    code = "CONFLICT"
    status = 409


class ServiceUnavailable(BinderyError):
    code = "SERVICE_UNAVAILABLE"
    status = 503


class BackendError(Exception):
    """Raised by builder and spawner backends.

    ``permanent`` errors fail the operation; transient ones are retried.
    """

    def __init__(self, message: str, *, permanent: bool = True, code: str = "BACKEND_ERROR"):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
