"""The repository pages: credentials (add, list, delete; a team's as its admin; the secret
never shown again) and the launch form a failure's "Edit and retry" comes back to."""

from __future__ import annotations

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.repos.models import Credential

pytestmark = pytest.mark.django_db

SECRET = "ghp_verysecretvalue1234567890"


@pytest.fixture
def alice(client):
    user = UserFactory(username="alice")
    client.force_login(user)
    return user


def test_add_a_credential_redirects_and_never_shows_the_secret(client, alice):
    response = client.post(
        "/repos/credentials/",
        {
            "host": "GitHub.com",
            "username": "",
            "token": SECRET,
            "label": "lab repos",
            "team": "",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/repos/credentials/"
    credential = Credential.objects.get()
    assert credential.user == alice and credential.team is None and credential.host == "github.com"
    assert SECRET not in credential.encrypted_token
    page = client.get("/repos/credentials/")
    html = page.content.decode()
    assert page.status_code == 200 and page["Cache-Control"].startswith("max-age=0")
    assert "Saved a credential for github.com, for you." in html
    assert "<strong>github.com</strong> · lab repos" in html
    assert SECRET not in html


def test_a_refused_credential_keeps_nothing_and_does_not_echo_the_token(client, alice):
    response = client.post("/repos/credentials/", {"host": "user:pw@github.com", "token": SECRET})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Give the host as a name such as github.com" in html
    assert SECRET not in html
    assert not Credential.objects.exists()


def test_team_admins_add_team_credentials_members_only_see_them(client, crew):
    client.force_login(crew.admin)
    form = client.get("/repos/credentials/").content.decode()
    assert '<option value="ocean-lab">Ocean Lab</option>' in form
    client.post(
        "/repos/credentials/",
        {"host": "gitlab.com", "username": "oauth2", "token": SECRET, "team": "ocean-lab"},
    )
    credential = Credential.objects.get()
    assert credential.team == crew.team and credential.user is None
    client.force_login(crew.member)
    html = client.get("/repos/credentials/").content.decode()
    assert "<strong>gitlab.com</strong>" in html and "team admins manage it" in html
    assert 'value="ocean-lab"' not in html  # a member cannot add for the team
    assert client.post(f"/repos/credentials/{credential.pk}/delete/").status_code == 302
    assert Credential.objects.filter(pk=credential.pk).exists()
    client.force_login(crew.admin)
    response = client.post(f"/repos/credentials/{credential.pk}/delete/", follow=True)
    assert "Deleted the credential for gitlab.com." in response.content.decode()
    assert not Credential.objects.exists()


def test_a_member_posting_for_the_team_is_refused(client, crew):
    client.force_login(crew.member)
    response = client.post(
        "/repos/credentials/", {"host": "gitlab.com", "token": SECRET, "team": "ocean-lab"}
    )
    assert response.status_code == 200
    assert not Credential.objects.exists()


def test_outsider_cannot_see_or_delete_anothers_credential(client, alice, crew):
    client.post("/repos/credentials/", {"host": "github.com", "token": SECRET})
    credential = Credential.objects.get()
    client.force_login(crew.outsider)
    assert "<strong>github.com</strong>" not in client.get("/repos/credentials/").content.decode()
    assert client.post(f"/repos/credentials/{credential.pk}/delete/").status_code == 404
    assert Credential.objects.filter(pk=credential.pk).exists()


def test_credentials_need_sign_in(client):
    response = client.get("/repos/credentials/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_an_empty_list_says_what_to_do(client, alice):
    html = client.get("/repos/credentials/?host=git.example.org").content.decode()
    assert "No credentials yet." in html
    assert 'value="git.example.org"' in html  # a failure's "Add a credential" fills the host


def test_the_launch_form_goes_to_the_v2_page_with_the_team(client, crew):
    client.force_login(crew.member)
    form = client.get("/repos/launch/?repository=https://github.com/org/repo&ref=dev")
    html = form.content.decode()
    assert 'value="https://github.com/org/repo"' in html and 'value="dev"' in html
    response = client.post(
        "/repos/launch/",
        {"repository": "https://github.com/org/repo", "ref": "dev", "team": "ocean-lab"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/v2/gh/org/repo/dev?team=ocean-lab"


def test_the_launch_form_says_why_input_is_refused(client, crew):
    client.force_login(crew.member)
    response = client.post("/repos/launch/", {"repository": "file:///etc/passwd"})
    assert response.status_code == 200
    assert 'class="error"' in response.content.decode()
