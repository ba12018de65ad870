"""The team pages: list and create, detail, member management, invitations and joining."""

from __future__ import annotations

import re

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.teams.models import Invitation, Membership, Team

pytestmark = pytest.mark.django_db


def test_create_team_from_list_page(client):
    user = UserFactory()
    client.force_login(user)
    response = client.post("/teams/", {"name": "Glacier Group"})
    team = Team.objects.get(name="Glacier Group")
    assert response["Location"] == f"/teams/{team.slug}/"
    assert Membership.objects.get(team=team).user == user
    assert "Glacier Group" in client.get("/teams/").content.decode()


def test_detail_lists_members_with_roles(client, crew):
    client.force_login(crew.member)
    html = client.get("/teams/ocean-lab/").content.decode()
    for name in ("owner", "admin", "member"):
        assert f"{name}@example.org" in html
    assert "Invite people" not in html  # members do not manage


def test_outsider_gets_404_page(client, crew):
    client.force_login(crew.outsider)
    assert client.get("/teams/ocean-lab/").status_code == 404
    response = client.post("/teams/ocean-lab/rename/", {"name": "Mine"})
    assert response.status_code == 404
    crew.team.refresh_from_db()
    assert crew.team.name == "Ocean Lab"


def test_admin_changes_role_and_removes(client, crew):
    client.force_login(crew.admin)
    client.post("/teams/ocean-lab/role/", {"membership": crew.member_m.pk, "role": "admin"})
    crew.member_m.refresh_from_db()
    assert crew.member_m.role == "admin"
    client.post("/teams/ocean-lab/remove/", {"membership": crew.member_m.pk})
    assert not Membership.objects.filter(pk=crew.member_m.pk).exists()


def test_last_owner_cannot_leave_and_is_told_why(client, crew):
    client.force_login(crew.owner)
    response = client.post("/teams/ocean-lab/leave/", follow=True)
    assert "last owner" in response.content.decode()
    assert Membership.objects.filter(pk=crew.owner_m.pk).exists()


def test_member_cannot_invite(client, crew):
    client.force_login(crew.member)
    response = client.post(
        "/teams/ocean-lab/invite-email/", {"email": "x@example.org", "role": "member"}, follow=True
    )
    assert "Only team owners and admins" in response.content.decode()
    assert not Invitation.objects.exists()


def test_invite_link_shown_once_then_join(client, crew):
    client.force_login(crew.admin)
    response = client.post("/teams/ocean-lab/invite-link/", {"role": "member", "days": 7})
    url = re.search(r'value="(http[^"]+/teams/join/[^"]+)"', response.content.decode()).group(1)
    path = url.split("127.0.0.1:8000", 1)[1]
    client.force_login(crew.outsider)
    assert "Ocean Lab" in client.get(path).content.decode()
    response = client.post(path)
    assert response["Location"] == "/teams/ocean-lab/"
    assert Membership.objects.get(user=crew.outsider, team=crew.team).role == "member"


def test_delete_needs_typed_confirmation(client, crew):
    client.force_login(crew.owner)
    client.post("/teams/ocean-lab/delete/", {"confirm": "wrong"})
    assert Team.objects.filter(slug="ocean-lab").exists()
    client.post("/teams/ocean-lab/delete/", {"confirm": "ocean-lab"})
    assert not Team.objects.filter(slug="ocean-lab").exists()


def test_unknown_action_is_404(client, crew):
    client.force_login(crew.owner)
    assert client.post("/teams/ocean-lab/explode/").status_code == 404


def test_join_with_bad_token_is_404(client):
    client.force_login(UserFactory())
    response = client.get("/teams/join/not-a-real-token/")
    assert response.status_code == 404
    assert "INVITATION_INVALID" in response.content.decode()
