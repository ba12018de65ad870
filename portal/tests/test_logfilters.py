"""Share-link and invitation secrets in request paths never reach a log line: a refused
request for a share link is logged by django.request through the real logging config."""

from __future__ import annotations

import logging

import pytest

from portal.logfilters import RedactSecrets, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Gone: /s/shr_35Z1abcDEF_-xyz0123456789abcdefghij", "35Z1abcDEF"),
        ("Too Many Requests: /s/shr_GEpjQQQQQQQQQQQQQQQQQQQQQQQQQQQQ", "GEpj"),
        ("Not Found: /teams/join/Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eA/", "Zm9vYmFy"),
        ("GET /accounts/login/?next=%2Fteams%2Fjoin%2FZm9vYmFyYmF6%2F", "Zm9vYmFy"),
        ("GET /user/a/b/?token=abcdef123456", "abcdef123456"),
    ],
)
def test_secrets_are_redacted(line, secret):
    assert secret not in redact(line)
    assert "[redacted]" in redact(line)


def test_a_plain_line_is_untouched():
    line = "Not Found: /sessions/12/ (session 12)"
    assert redact(line) == line


def test_the_configured_handler_redacts_a_django_request_line():
    filters = [f for h in logging.getLogger().handlers for f in h.filters
               if isinstance(f, RedactSecrets)]  # fmt: skip
    assert filters, "settings.LOGGING puts the filter on the console handler"
    secret = "shr_" + "Q" * 32
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1,
                               "Gone: %s", (f"/s/{secret}",), None)  # fmt: skip
    assert filters[0].filter(record)
    assert secret not in record.getMessage() and "Gone: /s/" in record.getMessage()
