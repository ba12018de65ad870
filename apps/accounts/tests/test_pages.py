"""Sign-up, verification, sign-in, profile and the tokens page, through the real views."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from apps.accounts import tokens
from apps.accounts.models import ApiToken, User
from apps.accounts.services import create_api_token
from apps.accounts.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_sign_up_verify_email_then_sign_in(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "dana@example.org", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    user = User.objects.get(email="dana@example.org")
    # Verification is mandatory: not signed in until the emailed link is followed.
    assert client.get("/account/profile/").status_code == 302
    [message] = mail.outbox
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+)", message.body).group(1)
    client.post(link)
    from allauth.account.models import EmailAddress

    assert EmailAddress.objects.get(user=user).verified
    client.logout()
    response = client.post("/accounts/login/", {"login": "dana@example.org", "password": PASSWORD})
    assert response.status_code == 302
    page = client.get("/account/profile/")
    assert page.status_code == 200
    assert "dana@example.org" in page.content.decode()


def test_sign_in_with_wrong_password_fails(client):
    UserFactory(email="eve@example.org")
    response = client.post("/accounts/login/", {"login": "eve@example.org", "password": "nope"})
    assert response.status_code == 200
    assert "not correct" in response.content.decode()


def test_password_reset_sends_link(client):
    UserFactory(email="fay@example.org")
    client.post("/accounts/password/reset/", {"email": "fay@example.org"})
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_profile_requires_login(client):
    response = client.get("/account/profile/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_profile_edit(client):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/account/profile/", {"first_name": "Grace", "last_name": "Hopper"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.get_full_name() == "Grace Hopper"


def test_tokens_page_shows_secret_once(client):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/account/tokens/", {"name": "laptop", "expires_in_days": "30"})
    assert response.status_code == 200
    html = response.content.decode()
    secret = re.search(r'value="(bdy_[^"]+)"', html).group(1)
    token = ApiToken.objects.get(user=user, name="laptop")
    assert token.digest == tokens.digest(secret)
    assert response["Cache-Control"].startswith("max-age=0")
    again = client.get("/account/tokens/").content.decode()
    assert "laptop" in again and secret not in again


def test_tokens_page_revoke(client):
    user = UserFactory()
    token = create_api_token(user, "old").token
    client.force_login(user)
    response = client.post(f"/account/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_tokens_page_cannot_revoke_another_users_token(client):
    token = create_api_token(UserFactory(), "theirs").token
    client.force_login(UserFactory())
    response = client.post(f"/account/tokens/{token.pk}/revoke/")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
