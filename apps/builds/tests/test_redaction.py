from __future__ import annotations

import base64

from apps.builds.redaction import MASK, Redactor

SECRET = "s3cret-token-7f9c2a41d8e6b5"


def test_known_secret_and_its_encodings_are_masked():
    redact = Redactor([SECRET], usernames=["reader"])
    basic = base64.b64encode(f"reader:{SECRET}".encode()).decode()
    line = f"token {SECRET} quoted {SECRET.replace('-', '%2D')} header Basic {basic}"
    out = redact(line)
    assert SECRET not in out and basic not in out
    assert out.count(MASK) >= 2


def test_url_userinfo_and_token_shapes_are_masked_without_being_told():
    redact = Redactor()
    out = redact(
        "cloning https://bob:hunter22@example.org/x.git with ghp_"
        + "a" * 36
        + " and glpat-"
        + "b" * 20
        + " Authorization: Bearer abc.def"
    )
    assert "hunter22" not in out
    assert "ghp_" + "a" * 36 not in out
    assert "glpat-" + "b" * 20 not in out
    assert "abc.def" not in out
    assert "https://***@example.org/x.git" in out


def test_short_secrets_are_ignored_so_logs_stay_readable():
    assert Redactor(["ab"])("ab cd ab") == "ab cd ab"
