"""Every team endpoint for owner, admin, member, outsider and anonymous: status and state."""

from __future__ import annotations

import pytest
from django.core import mail

from apps.teams.models import Invitation, Membership, Role, Team
from apps.teams.services import create_invite_link, invite_by_email

pytestmark = pytest.mark.django_db
ROLES = ["owner", "admin", "member", "outsider", "anonymous"]


def client_for(crew, token_client, role):
    return token_client(getattr(crew, role))


def expect(response, status, code=None):
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"] == code


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 200, 401], strict=True)))
def test_list_teams(crew, token_client, role, status):
    response = client_for(crew, token_client, role).get("/api/v1/teams/")
    expect(response, status)
    if status == 200:
        slugs = {t["slug"]: t["role"] for t in response.json()["results"]}
        assert slugs == ({} if role == "outsider" else {"ocean-lab": role})


def test_list_teams_query_count(crew, token_client, django_assert_max_num_queries):
    from apps.teams.services import create_team

    for i in range(8):
        create_team(crew.member, f"T{i}")
    client = token_client(crew.member)
    with django_assert_max_num_queries(4):
        assert len(client.get("/api/v1/teams/").json()["results"]) == 9


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 201, 201, 201, 401], strict=True)))
def test_create_team(crew, token_client, role, status):
    before = Team.objects.count()
    response = client_for(crew, token_client, role).post(
        "/api/v1/teams/", {"name": "Deep Sea"}, format="json"
    )
    expect(response, status)
    if status == 201:
        team = Team.objects.get(slug=response.json()["slug"])
        assert team.name == "Deep Sea"
        assert Membership.objects.get(team=team).user == getattr(crew, role)
        assert response.json()["role"] == "owner"
    else:
        assert Team.objects.count() == before


def test_create_team_with_taken_slug_is_409(crew, token_client):
    response = token_client(crew.outsider).post(
        "/api/v1/teams/", {"name": "Mine", "slug": "ocean-lab"}, format="json"
    )
    expect(response, 409, "TEAM_SLUG_TAKEN")
    assert Team.objects.get(slug="ocean-lab").name == "Ocean Lab"


def test_create_team_without_name_keeps_field_detail(crew, token_client):
    response = token_client(crew.member).post("/api/v1/teams/", {}, format="json")
    expect(response, 400, "VALIDATION_ERROR")
    assert "name" in response.json()["fields"]


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 404, 401], strict=True)))
def test_get_team(crew, token_client, role, status):
    response = client_for(crew, token_client, role).get("/api/v1/teams/ocean-lab/")
    expect(response, status)
    if status == 200:
        assert response.json()["role"] == role


def test_unknown_team_is_404_like_outsider(crew, token_client):
    expect(token_client(crew.owner).get("/api/v1/teams/nope/"), 404, "NOT_FOUND")


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 403, 404, 401], strict=True)))
def test_rename_team(crew, token_client, role, status):
    response = client_for(crew, token_client, role).patch(
        "/api/v1/teams/ocean-lab/", {"name": "Renamed"}, format="json"
    )
    expect(response, status)
    crew.team.refresh_from_db()
    assert crew.team.name == ("Renamed" if status == 200 else "Ocean Lab")


@pytest.mark.parametrize("role,status", list(zip(ROLES, [204, 403, 403, 404, 401], strict=True)))
def test_delete_team(crew, token_client, role, status):
    response = client_for(crew, token_client, role).delete("/api/v1/teams/ocean-lab/")
    expect(response, status)
    assert Team.objects.filter(slug="ocean-lab").exists() == (status != 204)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [409, 204, 204, 404, 401], strict=True)))
def test_leave_team(crew, token_client, role, status):
    response = client_for(crew, token_client, role).post("/api/v1/teams/ocean-lab/leave/")
    expect(response, status)
    if status == 409:
        assert response.json()["error"] == "LAST_OWNER"
    if role in ("owner", "admin", "member"):
        still = Membership.objects.filter(team=crew.team, user=getattr(crew, role)).exists()
        assert still == (status != 204)


def test_owner_can_leave_when_another_owner_exists(crew, token_client):
    Membership.objects.filter(pk=crew.admin_m.pk).update(role=Role.OWNER)
    expect(token_client(crew.owner).post("/api/v1/teams/ocean-lab/leave/"), 204)
    assert not Membership.objects.filter(pk=crew.owner_m.pk).exists()


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 404, 401], strict=True)))
def test_list_memberships(crew, token_client, role, status, django_assert_max_num_queries):
    client = client_for(crew, token_client, role)
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/teams/ocean-lab/memberships/")
    expect(response, status)
    if status == 200:
        roles = {m["user"]["username"]: m["role"] for m in response.json()["results"]}
        assert roles == {"owner": "owner", "admin": "admin", "member": "member"}


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 404, 401], strict=True)))
def test_get_membership(crew, token_client, role, status):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.member_m.pk}/"
    response = client_for(crew, token_client, role).get(url)
    expect(response, status)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 403, 404, 401], strict=True)))
def test_promote_member_to_admin(crew, token_client, role, status):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.member_m.pk}/"
    response = client_for(crew, token_client, role).patch(url, {"role": "admin"}, format="json")
    expect(response, status)
    crew.member_m.refresh_from_db()
    assert crew.member_m.role == ("admin" if status == 200 else "member")


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 403, 403, 404, 401], strict=True)))
def test_promote_admin_to_owner(crew, token_client, role, status):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.admin_m.pk}/"
    response = client_for(crew, token_client, role).patch(url, {"role": "owner"}, format="json")
    expect(response, status)
    crew.admin_m.refresh_from_db()
    assert crew.admin_m.role == ("owner" if status == 200 else "admin")


@pytest.mark.parametrize("role,status", list(zip(ROLES, [409, 403, 403, 404, 401], strict=True)))
def test_demote_last_owner(crew, token_client, role, status):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.owner_m.pk}/"
    response = client_for(crew, token_client, role).patch(url, {"role": "member"}, format="json")
    expect(response, status, "LAST_OWNER" if status == 409 else None)
    crew.owner_m.refresh_from_db()
    assert crew.owner_m.role == "owner"


def test_owner_can_demote_another_owner(crew, token_client):
    Membership.objects.filter(pk=crew.admin_m.pk).update(role=Role.OWNER)
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.admin_m.pk}/"
    response = token_client(crew.owner).patch(url, {"role": "member"}, format="json")
    expect(response, 200)
    crew.admin_m.refresh_from_db()
    assert crew.admin_m.role == "member"


def test_bad_role_is_validation_error(crew, token_client):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.member_m.pk}/"
    response = token_client(crew.owner).patch(url, {"role": "god"}, format="json")
    expect(response, 400, "VALIDATION_ERROR")
    assert "role" in response.json()["fields"]


@pytest.mark.parametrize("role,status", list(zip(ROLES, [204, 204, 403, 404, 401], strict=True)))
def test_remove_member(crew, token_client, role, status):
    # The member tries to remove the admin; everyone else removes the member.
    target = crew.admin_m if role == "member" else crew.member_m
    url = f"/api/v1/teams/ocean-lab/memberships/{target.pk}/"
    response = client_for(crew, token_client, role).delete(url)
    expect(response, status)
    assert Membership.objects.filter(pk=target.pk).exists() == (status != 204)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [409, 403, 403, 404, 401], strict=True)))
def test_remove_last_owner(crew, token_client, role, status):
    url = f"/api/v1/teams/ocean-lab/memberships/{crew.owner_m.pk}/"
    response = client_for(crew, token_client, role).delete(url)
    expect(response, status)
    assert Membership.objects.filter(pk=crew.owner_m.pk).exists()


def test_membership_of_another_team_is_404(crew, token_client):
    other = Team.objects.create(name="Other", slug="other")
    stranger = Membership.objects.create(team=other, user=crew.outsider, role=Role.OWNER)
    url = f"/api/v1/teams/ocean-lab/memberships/{stranger.pk}/"
    expect(token_client(crew.owner).delete(url), 404)
    assert Membership.objects.filter(pk=stranger.pk).exists()


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 403, 404, 401], strict=True)))
def test_list_invitations(crew, token_client, role, status):
    invite_by_email(crew.owner_m, "new@example.org")
    response = client_for(crew, token_client, role).get("/api/v1/teams/ocean-lab/invitations/")
    expect(response, status)
    if status == 200:
        [inv] = response.json()["results"]
        assert inv["email"] == "new@example.org"
        assert inv["status"] == "pending"
        assert "url" not in inv and "digest" not in inv


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 201, 403, 404, 401], strict=True)))
def test_invite_by_email(crew, token_client, role, status, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(crew, token_client, role).post(
            "/api/v1/teams/ocean-lab/invitations/", {"email": "New@Example.org"}, format="json"
        )
    expect(response, status)
    invitations = Invitation.objects.filter(team=crew.team)
    if status == 201:
        [inv] = invitations
        assert (inv.email, inv.role, inv.kind) == ("new@example.org", "member", "email")
        [message] = mail.outbox
        assert message.to == ["new@example.org"]
        assert response.json()["url"] in message.body
    else:
        assert not invitations.exists()
        assert mail.outbox == []


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 403, 403, 404, 401], strict=True)))
def test_invite_an_owner(crew, token_client, role, status):
    response = client_for(crew, token_client, role).post(
        "/api/v1/teams/ocean-lab/invitations/",
        {"email": "boss@example.org", "role": "owner"},
        format="json",
    )
    expect(response, status)
    assert Invitation.objects.filter(role="owner").exists() == (status == 201)


def test_invite_existing_member_is_409(crew, token_client):
    response = token_client(crew.admin).post(
        "/api/v1/teams/ocean-lab/invitations/", {"email": crew.member.email}, format="json"
    )
    expect(response, 409, "ALREADY_MEMBER")


@pytest.mark.parametrize("role,status", list(zip(ROLES, [201, 201, 403, 404, 401], strict=True)))
def test_create_invite_link(crew, token_client, role, status):
    response = client_for(crew, token_client, role).post(
        "/api/v1/teams/ocean-lab/invitations/",
        {"kind": "link", "days": 3, "max_uses": 2},
        format="json",
    )
    expect(response, status)
    if status == 201:
        inv = Invitation.objects.get(team=crew.team)
        assert (inv.kind, inv.max_uses) == ("link", 2)
        token = response.json()["url"].rstrip("/").rsplit("/", 1)[-1]
        assert token not in inv.digest


@pytest.mark.parametrize("role,status", list(zip(ROLES, [204, 204, 403, 404, 401], strict=True)))
def test_revoke_invitation(crew, token_client, role, status):
    inv = invite_by_email(crew.owner_m, "new@example.org").invitation
    url = f"/api/v1/teams/ocean-lab/invitations/{inv.pk}/"
    response = client_for(crew, token_client, role).delete(url)
    expect(response, status)
    inv.refresh_from_db()
    assert (inv.revoked_at is not None) == (status == 204)


@pytest.mark.parametrize("role,status", list(zip(ROLES, [200, 200, 200, 200, 401], strict=True)))
def test_accept_invite_link(crew, token_client, role, status):
    issued = create_invite_link(crew.admin_m, role="member")
    response = client_for(crew, token_client, role).post(
        "/api/v1/invitations/accept/", {"token": issued.token}, format="json"
    )
    expect(response, status)
    if role == "outsider":
        assert Membership.objects.get(team=crew.team, user=crew.outsider).role == "member"
        issued.invitation.refresh_from_db()
        assert issued.invitation.uses == 1
    elif status == 200:  # already in the team: nothing changes
        assert response.json()["role"] == role
        assert Membership.objects.filter(team=crew.team).count() == 3


def test_accept_email_invitation_needs_matching_address(crew, token_client):
    issued = invite_by_email(crew.owner_m, "someone@example.org")
    response = token_client(crew.outsider).post(
        "/api/v1/invitations/accept/", {"token": issued.token}, format="json"
    )
    expect(response, 403, "INVITATION_EMAIL_MISMATCH")
    assert not Membership.objects.filter(user=crew.outsider).exists()


def test_email_invitation_is_single_use(crew, token_client):
    issued = invite_by_email(crew.owner_m, crew.outsider.email, role="admin")
    client = token_client(crew.outsider)
    expect(client.post("/api/v1/invitations/accept/", {"token": issued.token}, format="json"), 200)
    assert Membership.objects.get(user=crew.outsider).role == "admin"
    Membership.objects.filter(user=crew.outsider).delete()
    response = client.post("/api/v1/invitations/accept/", {"token": issued.token}, format="json")
    expect(response, 404, "INVITATION_INVALID")


@pytest.mark.parametrize("state", ["revoked", "expired", "used-up", "unknown"])
def test_unusable_invitation_is_404(crew, token_client, state):
    from django.utils import timezone

    issued = create_invite_link(crew.owner_m, max_uses=1)
    inv = issued.invitation
    token = issued.token
    if state == "revoked":
        inv.revoked_at = timezone.now()
    elif state == "expired":
        inv.expires_at = timezone.now()
    elif state == "used-up":
        inv.uses = 1
    else:
        token = "x" * 32
    inv.save()
    response = token_client(crew.outsider).post(
        "/api/v1/invitations/accept/", {"token": token}, format="json"
    )
    expect(response, 404, "INVITATION_INVALID")
    assert not Membership.objects.filter(user=crew.outsider).exists()
