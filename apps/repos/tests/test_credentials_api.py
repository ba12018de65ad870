"""Every credentials endpoint for owner, admin, member, outsider and anonymous: status
codes and database state. No response ever carries a token."""

from __future__ import annotations

import pytest

from apps.repos import crypto, services
from apps.repos.models import Credential

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "outsider", "anonymous"]
SECRET = "ghp_TeSt0000SeCrEt1111tOkEn2222"


def client_for(crew, token_client, role):
    return token_client(getattr(crew, role))


def expect(response, status, code=None):
    assert response.status_code == status, response.content
    assert SECRET not in response.content.decode()
    if code:
        assert response.json()["error"] == code


@pytest.fixture
def stored(crew):
    """A credential of the team (added by its owner) and a personal one of each person."""
    team_credential = services.create_credential(
        crew.owner, host="github.com", token=SECRET, label="team", team=crew.team
    )
    own = {
        role: services.create_credential(
            getattr(crew, role), host="gitlab.com", token=SECRET, label=f"{role}'s"
        )
        for role in ("owner", "admin", "member", "outsider")
    }
    return team_credential, own


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 201, 201, 201, 401], strict=True)))
def test_create_own_credential(crew, token_client, role, status):
    response = client_for(crew, token_client, role).post(
        "/api/v1/credentials/",
        {"host": "GitHub.com", "username": "me", "token": SECRET, "label": "laptop"},
        format="json",
    )
    expect(response, status)
    if status == 201:
        body = response.json()
        assert "token" not in body
        assert response["Cache-Control"] == "no-store"
        credential = Credential.objects.get(pk=body["id"])
        assert credential.user == getattr(crew, role) and credential.team is None
        assert credential.host == "github.com" and credential.username == "me"
        assert crypto.decrypt(credential.encrypted_token) == SECRET
        assert body == {
            "id": credential.pk,
            "host": "github.com",
            "username": "me",
            "label": "laptop",
            "owner": "user",
            "team": None,
            "created_by": role,
            "created_at": body["created_at"],
            "last_used_at": None,
            "can_delete": True,
        }
    else:
        assert Credential.objects.count() == 0


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 201, 403, 404, 401], strict=True)))
def test_create_team_credential(crew, token_client, role, status):
    response = client_for(crew, token_client, role).post(
        "/api/v1/credentials/",
        {"host": "git.example.org:8443", "token": SECRET, "team": "ocean-lab"},
        format="json",
    )
    expect(response, status)
    if status == 201:
        credential = Credential.objects.get(pk=response.json()["id"])
        assert credential.team == crew.team and credential.user is None
        assert credential.created_by == getattr(crew, role)
        assert response.json()["team"] == "ocean-lab"
        assert response.json()["owner"] == "team"
        assert response.json()["can_delete"] is True
    else:
        assert Credential.objects.count() == 0


@pytest.mark.parametrize(
    "payload,code",
    [
        ({"host": "https://user:pw@github.com", "token": SECRET}, "URL_CREDENTIALS_FORBIDDEN"),
        ({"host": "not a host", "token": SECRET}, "CREDENTIAL_HOST_INVALID"),
        ({"host": "github.com", "token": f"{SECRET} {SECRET}"}, "CREDENTIAL_INVALID"),
        ({"host": "github.com", "token": f"{SECRET}\x07{SECRET}"}, "CREDENTIAL_INVALID"),
        ({"host": "github.com", "username": "a:b", "token": SECRET}, "CREDENTIAL_INVALID"),
        ({"host": "github.com"}, "VALIDATION_ERROR"),
    ],
)
def test_create_rejects_bad_input(crew, token_client, payload, code):
    response = token_client(crew.member).post("/api/v1/credentials/", payload, format="json")
    expect(response, 400, code)
    assert Credential.objects.count() == 0


def test_create_for_an_unknown_team_is_404(crew, token_client):
    response = token_client(crew.owner).post(
        "/api/v1/credentials/",
        {"host": "github.com", "token": SECRET, "team": "nope"},
        format="json",
    )
    expect(response, 404, "NOT_FOUND")


def test_default_ports_are_dropped_from_hosts(crew):
    credential = services.create_credential(crew.member, host="https://GitHub.com:443/", token="t")
    assert credential.host == "github.com"
    credential = services.create_credential(crew.member, host="git.example.org:8443", token="t")
    assert credential.host == "git.example.org:8443"


@pytest.mark.parametrize("role", ROLES)
def test_list_shows_own_and_team_credentials(crew, token_client, stored, role):
    team_credential, own = stored
    response = client_for(crew, token_client, role).get("/api/v1/credentials/")
    if role == "anonymous":
        expect(response, 401)
        return
    expect(response, 200)
    listed = {c["id"]: c for c in response.json()["results"]}
    expected = {own[role].pk}
    if role != "outsider":
        expected.add(team_credential.pk)
    assert set(listed) == expected
    if role != "outsider":
        shared = listed[team_credential.pk]
        assert shared["team"] == "ocean-lab" and shared["owner"] == "team"
        assert shared["can_delete"] == (role in ("owner", "admin"))
    assert all("token" not in c and "encrypted_token" not in c for c in listed.values())


def test_list_query_count(crew, token_client, django_assert_max_num_queries):
    for i in range(10):
        services.create_credential(
            crew.owner, host=f"h{i}.example.org", token=SECRET, team=crew.team
        )
        services.create_credential(crew.member, host=f"h{i}.example.org", token=SECRET)
    client = token_client(crew.member)
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/credentials/")
    assert len(response.json()["results"]) == 20


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 404, 401], strict=True)))
def test_get_team_credential(crew, token_client, stored, role, status):
    team_credential, _ = stored
    response = client_for(crew, token_client, role).get(
        f"/api/v1/credentials/{team_credential.pk}/"
    )
    expect(response, status)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [404, 404, 200, 404, 401], strict=True)))
def test_get_members_own_credential(crew, token_client, stored, role, status):
    _, own = stored
    response = client_for(crew, token_client, role).get(f"/api/v1/credentials/{own['member'].pk}/")
    expect(response, status)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [204, 204, 403, 404, 401], strict=True)))
def test_delete_team_credential(crew, token_client, stored, role, status):
    team_credential, _ = stored
    response = client_for(crew, token_client, role).delete(
        f"/api/v1/credentials/{team_credential.pk}/"
    )
    expect(response, status)
    assert Credential.objects.filter(pk=team_credential.pk).exists() == (status != 204)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [404, 404, 204, 404, 401], strict=True)))
def test_delete_members_own_credential(crew, token_client, stored, role, status):
    """Another user's credential is a 404, even for the owner of their team."""
    _, own = stored
    response = client_for(crew, token_client, role).delete(
        f"/api/v1/credentials/{own['member'].pk}/"
    )
    expect(response, status)
    assert Credential.objects.filter(pk=own["member"].pk).exists() == (status != 204)
    assert Credential.objects.count() == (4 if status == 204 else 5)


def test_delete_unknown_id_is_404(crew, token_client):
    expect(token_client(crew.owner).delete("/api/v1/credentials/999999/"), 404, "NOT_FOUND")
    expect(token_client(crew.owner).delete("/api/v1/credentials/abc/"), 404)


def test_leaving_the_team_loses_its_credentials(crew, token_client, stored):
    team_credential, _ = stored
    crew.member_m.delete()
    response = token_client(crew.member).get(f"/api/v1/credentials/{team_credential.pk}/")
    expect(response, 404)


def test_credentials_endpoints_are_in_the_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/v1/credentials/" in schema["paths"]
    assert "/api/v1/credentials/{credential_id}/" in schema["paths"]
    created = schema["components"]["schemas"]["Credential"]["properties"]
    assert "token" not in created
