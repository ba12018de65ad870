"""/admin/ sign-in is rate-limited per client address and user name, in the shared cache
(Redis): after BINDERY_ADMIN_LOGIN_ATTEMPTS failures it answers 429 — even to the right
password — until the window ends."""

from __future__ import annotations

import uuid

import pytest

from apps.accounts.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(settings):
    settings.BINDERY_ADMIN_LOGIN_ATTEMPTS = 3
    settings.BINDERY_ADMIN_LOGIN_WINDOW = 60
    # Fresh names: the counts live in the run's Redis and expire on their own.
    return UserFactory(username=f"admin-{uuid.uuid4().hex[:8]}", is_staff=True, is_superuser=True)


def attempt(client, username, password="wrong", ip="203.0.113.7"):
    return client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password},
        REMOTE_ADDR=ip,
    )  # fmt: skip


def test_too_many_failures_answer_429_even_to_the_right_password(client, staff):
    for _ in range(3):
        response = attempt(client, staff.username)
        assert response.status_code == 200  # the form again, with its error
        assert "_auth_user_id" not in client.session
    refused = attempt(client, staff.username, PASSWORD)
    assert refused.status_code == 429
    assert b"LOGIN_RATE_LIMITED" in refused.content
    assert "_auth_user_id" not in client.session  # not signed in
    # Another address, or another user name, is counted apart.
    assert attempt(client, staff.username, PASSWORD, ip="198.51.100.9").status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_another_user_name_is_not_limited(client, staff):
    someone = f"someone-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        attempt(client, someone)
    assert attempt(client, someone).status_code == 429
    assert attempt(client, staff.username, PASSWORD).status_code == 302


def test_a_success_clears_the_count(client, staff):
    for _ in range(2):
        attempt(client, staff.username)
    assert attempt(client, staff.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        assert attempt(client, staff.username).status_code == 200
    assert attempt(client, staff.username, PASSWORD).status_code == 302


def test_the_form_still_shows(client, staff):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content
