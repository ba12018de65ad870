"""Test helpers shared by every app: tests that need something from the machine.

A test that needs bubblewrap, pasta, root or writable cgroups skips where they are missing,
except in CI (``CI=true``), where a missing one fails it: there the security tests must run.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: object, reason: str) -> None:
    """Go on if ``condition`` holds; else fail the test in CI and skip it elsewhere."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def requires(condition: object, reason: str) -> pytest.MarkDecorator:
    """``@requires(cond, reason)``: :func:`require` for a whole test (or ``pytestmark``), checked
    when the test is set up (the ``requires`` marker, handled in the root conftest.py)."""
    return pytest.mark.requires(bool(condition), reason=reason)


def available(condition: object, reason: str) -> bool:
    """For a check inside a test that holds only where the machine allows it:
    ``if available(cgroups_writable(), "..."):``. False outside CI when the condition does
    not hold; in CI a missing condition fails the test instead of passing it unchecked."""
    if not condition and in_ci():
        pytest.fail(f"CI=true and this check cannot run: {reason}", pytrace=False)
    return bool(condition)
