"""Token and "me" endpoints, for the token's owner, another user and an anonymous client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts import tokens
from apps.accounts.models import ApiToken
from apps.accounts.services import create_api_token, revoke_api_token
from apps.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


def test_me_with_token(token_client, alice):
    response = token_client(alice).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_me_accepts_bearer_scheme(api, alice):
    secret = create_api_token(alice, "x").secret
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/me/").json()["email"] == alice.email


def test_me_patch_changes_name_not_email(token_client, alice):
    response = token_client(alice).patch(
        "/api/v1/me/", {"first_name": "Alice", "email": "evil@example.org"}, format="json"
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.first_name == "Alice"
    assert alice.email == "alice@example.org"


def test_anonymous_gets_401_with_error_shape(api):
    response = api.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"] == "NOT_AUTHENTICATED"
    assert response["WWW-Authenticate"].startswith("Token")


def test_create_token_returns_secret_once_and_stores_digest_only(token_client, alice):
    client = token_client(alice)
    response = client.post("/api/v1/tokens/", {"name": "ci", "expires_in_days": 30}, format="json")
    assert response.status_code == 201
    body = response.json()
    secret = body["token"]
    assert tokens.is_well_formed(secret)
    assert response["Cache-Control"] == "no-store"
    stored = ApiToken.objects.get(pk=body["id"])
    assert stored.digest == tokens.digest(secret)
    assert secret not in {stored.prefix, stored.digest, stored.name}
    assert stored.expires_at is not None
    assert stored.expires_at - timezone.now() > timedelta(days=29)
    # The secret works, and is never listed again.
    fresh = token_client(None)
    fresh.credentials(HTTP_AUTHORIZATION=f"token {secret}")
    assert fresh.get("/api/v1/me/").status_code == 200
    listed = client.get("/api/v1/tokens/").content.decode()
    assert secret not in listed
    assert client.get(f"/api/v1/tokens/{stored.pk}/").json().get("token") is None


def test_create_token_validation_keeps_field_detail(token_client, alice):
    response = token_client(alice).post("/api/v1/tokens/", {"expires_in_days": 0}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_ERROR"
    assert set(body["fields"]) == {"name", "expires_in_days"}


def test_create_token_with_past_expiry_is_refused(token_client, alice):
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = token_client(alice).post(
        "/api/v1/tokens/", {"name": "x", "expires_at": past}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "TOKEN_EXPIRY_IN_PAST"
    assert ApiToken.objects.filter(name="x").count() == 0


def test_anonymous_cannot_create_or_list_tokens(api):
    assert api.get("/api/v1/tokens/").status_code == 401
    assert api.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 401
    assert ApiToken.objects.count() == 0


def test_list_shows_only_my_tokens(token_client, alice, bob, django_assert_max_num_queries):
    create_api_token(bob, "bobs")
    for i in range(5):
        create_api_token(alice, f"a{i}")
    client = token_client(alice)  # adds a sixth
    with django_assert_max_num_queries(4):
        response = client.get("/api/v1/tokens/")
    names = [t["name"] for t in response.json()["results"]]
    assert len(names) == 6
    assert "bobs" not in names


def test_revoke_my_token(token_client, alice):
    client = token_client(alice)
    token = create_api_token(alice, "old").token
    response = client.delete(f"/api/v1/tokens/{token.pk}/")
    assert response.status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_other_user_gets_404_for_my_token(token_client, alice, bob):
    token = create_api_token(alice, "mine").token
    client = token_client(bob)
    assert client.get(f"/api/v1/tokens/{token.pk}/").status_code == 404
    response = client.delete(f"/api/v1/tokens/{token.pk}/")
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"
    token.refresh_from_db()
    assert token.revoked_at is None


def test_anonymous_cannot_revoke(api, alice):
    token = create_api_token(alice, "mine").token
    assert api.delete(f"/api/v1/tokens/{token.pk}/").status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is None


def _call_with(api, header):
    api.credentials(HTTP_AUTHORIZATION=header)
    response = api.get("/api/v1/me/")
    return response.status_code, response.json()["error"]


def test_revoked_token_gets_401(api, alice):
    issued = create_api_token(alice, "x")
    revoke_api_token(issued.token)
    assert _call_with(api, f"token {issued.secret}") == (401, "TOKEN_REVOKED")


def test_expired_token_gets_401(api, alice):
    issued = create_api_token(alice, "x", timezone.now() + timedelta(minutes=1))
    ApiToken.objects.filter(pk=issued.token.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert _call_with(api, f"token {issued.secret}") == (401, "TOKEN_EXPIRED")


@pytest.mark.parametrize(
    "header",
    [
        "token",
        "token ",
        "Bearer",
        "token bdy_short",
        "token not-a-token",
        "Bearer a b",
        "token bdy_" + "!" * 40,
        "token " + "x" * 5000,
    ],
)
def test_malformed_token_gets_401(api, alice, header):
    status, code = _call_with(api, header)
    assert status == 401
    assert code == "TOKEN_MALFORMED"


def test_unknown_token_gets_401(api, alice):
    assert _call_with(api, "token " + tokens.generate()) == (401, "TOKEN_INVALID")


def test_token_of_deactivated_user_gets_401(api, alice):
    secret = create_api_token(alice, "x").secret
    alice.is_active = False
    alice.save()
    assert _call_with(api, f"token {secret}") == (401, "TOKEN_INVALID")


def test_token_use_records_last_used(api, alice):
    issued = create_api_token(alice, "x")
    api.credentials(HTTP_AUTHORIZATION=f"token {issued.secret}")
    api.get("/api/v1/me/")
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None
