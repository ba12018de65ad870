from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema_lists_every_v1_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in [
        "/api/v1/me/",
        "/api/v1/tokens/",
        "/api/v1/tokens/{token_id}/",
        "/api/v1/teams/",
        "/api/v1/teams/{slug}/memberships/{membership_id}/",
        "/api/v1/teams/{slug}/invitations/",
        "/api/v1/invitations/accept/",
    ]:
        assert path in schema["paths"], path
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_docs_page_uses_no_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert (
        client.get(
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
        ).status_code
        == 200
    )


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


def test_method_not_allowed_has_stable_code(token_client):
    from apps.accounts.tests.factories import UserFactory

    response = token_client(UserFactory()).put("/api/v1/me/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"] == "METHOD_NOT_ALLOWED"


def test_malformed_json_has_stable_code(token_client):
    from apps.accounts.tests.factories import UserFactory

    response = token_client(UserFactory()).generic(
        "POST", "/api/v1/tokens/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "MALFORMED_REQUEST"
