"""A private repository behind HTTP basic auth on the real loopback git server: it resolves
(and fetches) with a stored credential, fails clearly without one, and its token appears in
no error message, log line, API response or database column except the encrypted one."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from apps.accounts.tests.factories import UserFactory
from apps.repos import services
from apps.repos.fetch import fetch
from apps.repos.models import Credential
from apps.repos.tests.gitserver import GitServer
from apps.teams.models import Membership, Role, Team
from portal.errors import BackendError, BinderyError

pytestmark = pytest.mark.django_db


@pytest.fixture
def private(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("secret")
    repo = server.create_repo(f"private/{name}", {"requirements.txt": "pandas\n"})
    return server, name, repo


def store(user, server, token=GitServer.token, **kwargs):
    return services.create_credential(
        user, host=server.host, username=GitServer.username, token=token, **kwargs
    )


def every_stored_value():
    """Every value of every column of every table, as text."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("latin-1")
                    values.append((table, str(value)))
    return values


def test_without_a_credential_a_private_repo_fails_clearly(private):
    server, name, _ = private
    user = UserFactory()
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"private/{name}/main", user)
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    assert caught.value.status == 404
    assert "credential" in caught.value.message
    # The server was asked, without any authorization header.
    assert any(path.startswith(f"/private/{name}") for _, path, _ in server.requests)


def test_with_a_stored_credential_it_resolves_and_fetches(private, tmp_path):
    server, name, repo = private
    user = UserFactory()
    credential = store(user, server, label="ci token")
    assert credential.last_used_at is None
    resolved = services.resolve("gh", f"private/{name}/main", user)
    assert resolved.resolved_ref == repo.head
    assert resolved.credential_id == credential.pk and resolved.is_private
    credential.refresh_from_db()
    assert credential.last_used_at is not None
    assert services.credential_used(resolved, user) == credential
    # The worker gets the credential by id and fetches the commit with it.
    git_credential = services.load_git_credential(resolved.credential_id)
    fetch(resolved, tmp_path / "checkout", credentials=(git_credential,))
    assert (tmp_path / "checkout" / "requirements.txt").read_text() == "pandas\n"


def test_fetch_of_a_private_repo_without_the_credential_fails(private, tmp_path):
    server, name, _ = private
    user = UserFactory()
    store(user, server)
    resolved = services.resolve("gh", f"private/{name}/main", user)
    with pytest.raises(BackendError) as caught:
        fetch(resolved, tmp_path / "checkout")
    assert caught.value.code == "GIT_FAILED"
    assert not (tmp_path / "checkout").exists()


def test_a_public_repo_does_not_use_or_mark_a_credential(hosted_on_git_server, unique):
    server = hosted_on_git_server
    name = unique("public")
    server.create_repo(f"org/{name}", {"a": "b"})
    user = UserFactory()
    credential = store(user, server)
    resolved = services.resolve("gh", f"org/{name}/main", user)
    assert resolved.credential_id is None
    credential.refresh_from_db()
    assert credential.last_used_at is None


def test_a_wrong_token_fails_and_the_right_team_token_is_used(private):
    server, name, _ = private
    team = Team.objects.create(name="Lab", slug="lab")
    owner, member = UserFactory(), UserFactory()
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    Membership.objects.create(team=team, user=member, role=Role.MEMBER)
    wrong = store(member, server, token="not-the-token-0000")
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"private/{name}/main", member)
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    shared = store(owner, server, team=team)
    resolved = services.resolve("gh", f"private/{name}/main", member, team=team)
    assert resolved.credential_id == shared.pk
    wrong.refresh_from_db()
    assert wrong.last_used_at is None


def test_another_users_credential_is_never_used(private):
    server, name, _ = private
    store(UserFactory(), server)
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"private/{name}/main", UserFactory())
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"


def test_a_credential_is_only_offered_to_its_own_host(private):
    _, name, _ = private
    user = UserFactory()
    services.create_credential(user, host="git.example.org", token=GitServer.token)
    with pytest.raises(BinderyError) as caught:
        services.resolve("gh", f"private/{name}/main", user)
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"


def test_the_token_appears_nowhere(private, token_client, caplog):
    server, name, _ = private
    token = GitServer.token
    caplog.set_level(logging.DEBUG)
    user = UserFactory()
    client = token_client(user)
    seen: list[str] = []

    # Created through the API: the response echoes metadata only.
    response = client.post(
        "/api/v1/credentials/",
        {"host": server.host, "username": GitServer.username, "token": token, "label": "x"},
        format="json",
    )
    assert response.status_code == 201, response.content
    seen.append(response.content.decode())
    seen.append(client.get("/api/v1/credentials/").content.decode())
    seen.append(client.get(f"/api/v1/credentials/{response.json()['id']}/").content.decode())

    # Errors: a wrong token of the same shape, a missing ref, a bad host.
    store(user, server, token=token[::-1])
    for spec in (f"private/{name}/no-such-ref", f"private/{name}-missing/main"):
        with pytest.raises(BinderyError) as caught:
            services.resolve("gh", spec, user)
        seen.append(str(caught.value))
        seen.append(repr(caught.value.as_dict()))
    bad = client.post("/api/v1/credentials/", {"host": "bad host", "token": token}, format="json")
    assert bad.status_code == 400
    seen.append(bad.content.decode())
    overlong = client.post(
        "/api/v1/credentials/", {"host": server.host, "token": token + "\n" + token}, format="json"
    )
    assert overlong.status_code == 400
    seen.append(overlong.content.decode())

    # It worked, so the token really was there to be leaked.
    assert services.resolve("gh", f"private/{name}/main", user).credential_id is not None
    seen.extend(record.getMessage() for record in caplog.records)
    seen.extend(repr(c) for c in services.credentials_for(user, server.host))
    seen.extend(str(c) for c in Credential.objects.all())

    assert not [text for text in seen if token in text or token[::-1] in text]
    stored = every_stored_value()
    holders = {table for table, value in stored if token in value or token[::-1] in value}
    assert holders == set()
    # ...and the encrypted column does hold it, encrypted.
    encrypted = [value for table, value in stored if table == "repos_credential"]
    assert any(value.startswith("gAAAAA") for value in encrypted)
