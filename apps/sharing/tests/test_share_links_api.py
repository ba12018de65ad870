"""Share links through the API: who may launch them, with whose credentials and quota, and
that a revoked or expired link stops working. Private repositories are on the real loopback
git server and need its token; credentials are stored (encrypted) as people store them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.repos.models import Credential
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.models import Session
from apps.sharing import tokens
from apps.sharing.models import ShareLink
from apps.sharing.tests.conftest import store_credential

pytestmark = pytest.mark.django_db
SHARES = "/api/v1/shares/"
LAUNCH = "/api/v1/shares/launch/"


def expect(response, status, code=None):
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"] == code
    return response.json() if response.content else None


def share(client, **body):
    return expect(client.post(SHARES, body, format="json"), 201)


def test_creating_a_link_returns_its_secret_once(crew, hosted, token_client):
    made = hosted.repo()
    client = token_client(crew.member)
    response = client.post(SHARES, {"name": "Demo", "spec": made.spec,
                                    "urlpath": "lab/tree/index.ipynb"}, format="json")  # fmt: skip
    body = expect(response, 201)
    assert response["Cache-Control"] == "no-store"
    assert tokens.is_well_formed(body["token"]) and body["url"].endswith(f"/s/{body['token']}")
    link = ShareLink.objects.get()
    assert link.digest == tokens.digest(body["token"]) and body["token"] not in link.digest
    assert (link.audience, link.team, link.created_by) == ("signed_in", None, crew.member)
    listed = expect(client.get(SHARES), 200)["results"]
    assert [item["id"] for item in listed] == [link.pk]
    assert "token" not in listed[0] and body["token"] not in str(listed)
    assert expect(client.get(f"{SHARES}{link.pk}/"), 200)["status"] == "active"


def test_a_link_is_launched_as_the_launchers_own_session(crew, hosted, token_client):
    made = hosted.repo()
    link = share(token_client(crew.owner), spec=made.spec, urlpath="lab/tree/index.ipynb")
    launcher = UserFactory()
    body = expect(token_client(launcher).post(LAUNCH, {"token": link["token"]}, format="json"), 201)
    session = Session.objects.get()
    assert body == dict(SessionSerializer(session).data)
    assert session.user == launcher and session.team is None
    assert session.build.requested_by == launcher and session.build.team is None
    assert session.urlpath == "lab/tree/index.ipynb"
    stored = ShareLink.objects.get()
    assert stored.uses == 1 and stored.last_used_at is not None


def test_a_revoked_link_stops_working(crew, hosted, token_client):
    made = hosted.repo()
    sharer = token_client(crew.member)
    link = share(sharer, spec=made.spec)
    expect(sharer.delete(f"{SHARES}{link['id']}/"), 204)
    row = ShareLink.objects.get()
    assert row.revoked_at is not None  # kept, not deleted
    for user in (crew.outsider, crew.member):
        expect(token_client(user).post(LAUNCH, {"token": link["token"]}, format="json"),
               410, "SHARE_LINK_REVOKED")  # fmt: skip
    assert not Session.objects.exists() and not Build.objects.exists()
    assert ShareLink.objects.get().uses == 0
    expect(sharer.delete(f"{SHARES}{link['id']}/"), 204)  # twice: still revoked, same time
    assert ShareLink.objects.get().revoked_at == row.revoked_at


def test_an_expired_link_stops_working(crew, hosted, token_client):
    made = hosted.repo()
    soon = timezone.now() + timedelta(hours=1)
    link = share(token_client(crew.member), spec=made.spec, expires_at=soon.isoformat())
    ShareLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expect(token_client(crew.outsider).post(LAUNCH, {"token": link["token"]}, format="json"),
           410, "SHARE_LINK_EXPIRED")  # fmt: skip
    assert not Session.objects.exists() and not Build.objects.exists()


def test_an_expiry_in_the_past_is_refused(crew, hosted, token_client):
    made = hosted.repo()
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    expect(token_client(crew.member).post(SHARES, {"spec": made.spec, "expires_at": past},
                                          format="json"), 400, "VALIDATION_ERROR")  # fmt: skip
    assert not ShareLink.objects.exists()


@pytest.mark.parametrize("token", ["shr_" + "A" * 32, "not-a-token", ""])
def test_an_unknown_link_is_404(crew, token_client, token):
    response = token_client(crew.member).post(LAUNCH, {"token": token}, format="json")
    assert response.status_code in (400, 404)
    if token:
        expect(response, 404, "SHARE_LINK_NOT_FOUND")


def test_only_the_sharer_sees_and_revokes_a_link(crew, hosted, token_client):
    made = hosted.repo()
    link = share(token_client(crew.member), spec=made.spec)
    other = token_client(crew.owner)
    expect(other.get(f"{SHARES}{link['id']}/"), 404, "SHARE_LINK_NOT_FOUND")
    expect(other.delete(f"{SHARES}{link['id']}/"), 404, "SHARE_LINK_NOT_FOUND")
    assert expect(other.get(SHARES), 200)["results"] == []
    assert ShareLink.objects.get().revoked_at is None


def test_anonymous_cannot_use_the_api(crew, hosted, api, token_client):
    made = hosted.repo()
    link = share(token_client(crew.member), spec=made.spec)
    expect(api.post(LAUNCH, {"token": link["token"]}, format="json"), 401, "NOT_AUTHENTICATED")
    expect(api.get(SHARES), 401, "NOT_AUTHENTICATED")
    assert not Session.objects.exists()


def test_a_team_link_is_for_its_members_and_launches_for_the_team(crew, hosted, token_client):
    made = hosted.repo()
    link = share(token_client(crew.admin), spec=made.spec, audience="team", team="ocean-lab")
    assert ShareLink.objects.get().team == crew.team
    expect(token_client(crew.outsider).post(LAUNCH, {"token": link["token"]}, format="json"),
           404, "SHARE_LINK_NOT_FOUND")  # fmt: skip
    assert not Session.objects.exists()
    expect(token_client(crew.member).post(LAUNCH, {"token": link["token"]}, format="json"), 201)
    session = Session.objects.get()
    assert session.user == crew.member and session.team == crew.team


def test_a_team_link_outside_the_team_is_404_even_revoked(crew, hosted, token_client):
    made = hosted.repo()
    sharer = token_client(crew.admin)
    link = share(sharer, spec=made.spec, audience="team", team="ocean-lab")
    expect(sharer.delete(f"{SHARES}{link['id']}/"), 204)
    expect(token_client(crew.outsider).post(LAUNCH, {"token": link["token"]}, format="json"),
           404, "SHARE_LINK_NOT_FOUND")  # fmt: skip
    expect(token_client(crew.member).post(LAUNCH, {"token": link["token"]}, format="json"),
           410, "SHARE_LINK_REVOKED")  # fmt: skip


def test_sharing_with_a_team_one_is_not_in_is_refused(crew, hosted, token_client):
    made = hosted.repo()
    client = token_client(crew.outsider)
    expect(client.post(SHARES, {"spec": made.spec, "audience": "team", "team": "ocean-lab"},
                       format="json"), 404)  # fmt: skip
    expect(client.post(SHARES, {"spec": made.spec, "audience": "team"}, format="json"),
           400, "VALIDATION_ERROR")  # fmt: skip
    assert not ShareLink.objects.exists()


def test_a_team_link_stops_when_its_sharer_leaves_the_team(crew, hosted, token_client):
    made = hosted.repo()
    link = share(token_client(crew.admin), spec=made.spec, audience="team", team="ocean-lab")
    crew.admin_m.delete()
    expect(token_client(crew.member).post(LAUNCH, {"token": link["token"]}, format="json"),
           404, "SHARE_LINK_NOT_FOUND")  # fmt: skip


def test_a_link_can_share_one_of_my_sessions(crew, hosted, token_client):
    made = hosted.repo()
    client = token_client(crew.member)
    expect(client.post("/api/v1/sessions/", {"spec": made.spec,
                                             "urlpath": "lab/tree/index.ipynb"},
                       format="json"), 201)  # fmt: skip
    mine = Session.objects.get()
    link = share(client, session=mine.pk)
    assert link["spec"] == made.spec and link["urlpath"] == "lab/tree/index.ipynb"
    expect(token_client(crew.owner).post(SHARES, {"session": mine.pk}, format="json"), 404)


def test_a_shared_private_repo_never_lends_the_sharers_credential(crew, hosted, token_client):
    """The sharer reads a private repository with their own stored credential and builds it;
    someone else launching the share link resolves it with *their* credentials, gets the
    resolution error and no session, and no build made with the sharer's credential is
    handed to them."""
    made = hosted.repo(private=True)
    own = store_credential(crew.member, hosted.server.host)
    sharer = token_client(crew.member)
    expect(sharer.post("/api/v1/sessions/", {"spec": made.spec}, format="json"), 201)
    build = Build.objects.get()
    assert build.credential == own and build.requested_by == crew.member
    used_at = Credential.objects.get(pk=own.pk).last_used_at
    link = share(sharer, spec=made.spec)

    for launcher in (crew.outsider, crew.owner):  # a stranger, and a teammate personally
        expect(token_client(launcher).post(LAUNCH, {"token": link["token"]}, format="json"),
               404, "REPO_NOT_FOUND_OR_PRIVATE")  # fmt: skip
        assert not Session.objects.filter(user=launcher).exists()
    assert list(Build.objects.all()) == [build]
    assert Credential.objects.get(pk=own.pk).last_used_at == used_at  # never even tried
    assert ShareLink.objects.get().uses == 0
    # The page refuses it the same way.
    page = token_client(crew.outsider)
    page.force_login(crew.outsider)
    response = page.post(f"/s/{link['token']}")
    assert response.status_code == 404 and b"REPO_NOT_FOUND_OR_PRIVATE" in response.content
    assert Session.objects.count() == 1


def test_a_launcher_with_their_own_credential_gets_their_own_build(crew, hosted, token_client):
    made = hosted.repo(private=True)
    sharers = store_credential(crew.member, hosted.server.host)
    sharer = token_client(crew.member)
    expect(sharer.post("/api/v1/sessions/", {"spec": made.spec}, format="json"), 201)
    link = share(sharer, spec=made.spec)
    theirs = store_credential(crew.outsider, hosted.server.host)
    expect(token_client(crew.outsider).post(LAUNCH, {"token": link["token"]}, format="json"), 201)
    session = Session.objects.get(user=crew.outsider)
    assert session.build.credential == theirs != sharers
    assert session.build.scope != Build.objects.get(requested_by=crew.member).scope


def test_a_team_share_of_a_team_credentialed_private_repo(crew, hosted, token_client):
    made = hosted.repo(private=True)
    shared = store_credential(crew.owner, hosted.server.host, team=crew.team)
    link = share(token_client(crew.admin), spec=made.spec, audience="team", team="ocean-lab")
    expect(token_client(crew.member).post(LAUNCH, {"token": link["token"]}, format="json"), 201)
    session = Session.objects.get()
    assert session.team == crew.team and session.user == crew.member
    assert session.build.credential == shared
    # The same repository shared to everyone signed in: a personal launch, no team credential.
    everyone = share(token_client(crew.admin), spec=made.spec)
    expect(token_client(crew.member).post(LAUNCH, {"token": everyone["token"]}, format="json"),
           404, "REPO_NOT_FOUND_OR_PRIVATE")  # fmt: skip
    assert Session.objects.count() == 1
