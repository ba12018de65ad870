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


def test_invite_link_redirects_then_is_shown_once_then_join(client, crew):
    client.force_login(crew.admin)
    response = client.post("/teams/ocean-lab/invite-link/", {"role": "member", "days": 7})
    # post/redirect/get: a refresh of the result does not make another link
    assert response.status_code == 302 and response["Location"] == "/teams/ocean-lab/"
    assert Invitation.objects.count() == 1
    page = client.get("/teams/ocean-lab/").content.decode()
    url = re.search(r'value="(http[^"]+/teams/join/[^"]+)"', page).group(1)
    assert (
        url.split("/teams/join/", 1)[1].strip("/")
        not in client.get("/teams/ocean-lab/").content.decode()
    )
    assert Invitation.objects.count() == 1
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


def _invite_path(client, crew) -> str:
    client.force_login(crew.admin)
    client.post("/teams/ocean-lab/invite-link/", {"role": "member", "days": 7})
    page = client.get("/teams/ocean-lab/").content.decode()
    client.logout()
    found = re.search(r'/teams/join/([^"/]+)/', page)
    assert found is not None
    return "/teams/join/" + found.group(1) + "/"


def test_a_signed_out_invitee_lands_on_a_page_naming_the_team(client, crew):
    path = _invite_path(client, crew)
    response = client.get(path)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Join Ocean Lab" in html and "as <strong>member</strong>" in html
    quoted = path.replace("/", "%2F")
    assert f'href="/accounts/signup/?next={quoted}"' in html
    assert f'href="/accounts/login/?next={quoted}"' in html
    # the header's Sign in / Sign up keep the invitation too
    assert html.count(f"next={quoted}") >= 4
    assert not Membership.objects.filter(team=crew.team, user__username="newcomer").exists()


def test_the_invitation_survives_sign_up_and_login(client, crew, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    path = _invite_path(client, crew)
    response = client.post(
        f"/accounts/signup/?next={path}",
        {
            "email": "newcomer@example.org",
            "username": "newcomer",
            "password1": "a long and unusual passphrase",
            "password2": "a long and unusual passphrase",
            "next": path,
        },
    )
    assert response.status_code == 302 and response["Location"] == path
    joined = client.post(path)
    assert joined["Location"] == "/teams/ocean-lab/"
    assert Membership.objects.get(team=crew.team, user__username="newcomer").role == "member"


def test_the_invitation_survives_login(client, crew):
    from apps.accounts.tests.factories import PASSWORD

    path = _invite_path(client, crew)
    response = client.post(
        f"/accounts/login/?next={path}",
        {"login": crew.outsider.email, "password": PASSWORD, "next": path},
    )
    assert response.status_code == 302 and response["Location"] == path
    assert "Join Ocean Lab" in client.get(path).content.decode()


def test_a_signed_out_post_to_an_invitation_asks_to_sign_in(client, crew):
    path = _invite_path(client, crew)
    response = client.post(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Membership.objects.filter(team=crew.team).count() == 3
