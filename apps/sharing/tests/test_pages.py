"""The pages: the team page's Environments section for members and admins, its forms, the
dashboard's list, /s/ (my links) and /s/<token> for anonymous, outsider and member."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.sessions.models import Session
from apps.sharing import services
from apps.sharing.models import ShareLink, TeamEnvironment

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(crew, hosted):
    made = hosted.repo()
    return TeamEnvironment.objects.create(
        team=crew.team, name="Workshop notebooks", provider="gh", spec=made.spec[3:],
        created_by=crew.admin,
    )  # fmt: skip


def page(client, user, url):
    client.force_login(user)
    return client.get(url)


def test_the_team_page_shows_members_the_environments_with_launch(client, crew, env):
    response = page(client, crew.member, "/teams/ocean-lab/")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<section id="environments">' in html and "Workshop notebooks" in html
    assert f'action="/teams/ocean-lab/environments/{env.pk}/launch/"' in html
    assert "Add an environment" not in html
    assert f"/environments/{env.pk}/delete/" not in html
    assert "<script>" not in html and "style=" not in html


def test_the_team_page_gives_admins_the_add_form_and_delete(client, crew, env):
    html = page(client, crew.admin, "/teams/ocean-lab/").content.decode()
    assert "Add an environment" in html
    assert 'action="/teams/ocean-lab/environments/add/"' in html
    assert f'action="/teams/ocean-lab/environments/{env.pk}/delete/"' in html


def test_the_team_page_is_404_for_an_outsider(client, crew, env):
    assert page(client, crew.outsider, "/teams/ocean-lab/").status_code == 404


def test_an_admin_adds_an_environment_from_the_page(client, crew, hosted):
    made = hosted.repo()
    client.force_login(crew.admin)
    response = client.post("/teams/ocean-lab/environments/add/", {
        "name": "From the page", "repository": made.url, "ref": "main",
        "urlpath": "lab/tree/index.ipynb", "memory_mib": "512", "cpu": "",
    })  # fmt: skip
    assert response.status_code == 302 and response["Location"].startswith("/teams/ocean-lab/")
    environment = TeamEnvironment.objects.get()
    assert environment.name == "From the page" and environment.memory_bytes == 512 * 1024**2
    assert environment.follow_branch is False  # an unticked box
    assert environment.resolved_ref == made.repo.head


def test_a_member_cannot_add_or_delete_from_the_page(client, crew, env, hosted):
    made = hosted.repo()
    client.force_login(crew.member)
    client.post("/teams/ocean-lab/environments/add/",
                {"name": "x", "repository": made.url, "ref": "main"})  # fmt: skip
    client.post(f"/teams/ocean-lab/environments/{env.pk}/delete/")
    assert list(TeamEnvironment.objects.values_list("pk", flat=True)) == [env.pk]


def test_a_member_launches_from_the_team_page_and_lands_on_the_launch_page(client, crew, env):
    client.force_login(crew.member)
    response = client.post(f"/teams/ocean-lab/environments/{env.pk}/launch/")
    session = Session.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/sessions/{session.pk}/"
    assert session.team == crew.team and session.user == crew.member


def test_an_outsider_cannot_launch_from_the_page(client, crew, env):
    client.force_login(crew.outsider)
    assert client.post(f"/teams/ocean-lab/environments/{env.pk}/launch/").status_code == 404
    assert not Session.objects.exists()


def test_a_launch_get_does_nothing(client, crew, env):
    client.force_login(crew.member)
    assert client.get(f"/teams/ocean-lab/environments/{env.pk}/launch/").status_code == 405
    assert not Session.objects.exists()


def test_the_dashboard_lists_my_teams_environments(client, crew, env):
    html = page(client, crew.member, "/sessions/").content.decode()
    assert "Team environments" in html and "Workshop notebooks" in html
    assert f'action="/teams/ocean-lab/environments/{env.pk}/launch/"' in html
    assert 'href="/s/"' in html
    other = page(client, crew.outsider, "/sessions/").content.decode()
    assert "Workshop notebooks" not in other


def test_a_launch_from_the_dashboard_that_fails_comes_back_to_it(client, crew, env, settings):
    TeamEnvironment.objects.filter(pk=env.pk).update(spec="lab/gone-away/main")
    client.force_login(crew.member)
    response = client.post(f"/teams/ocean-lab/environments/{env.pk}/launch/",
                           {"from": "dashboard"}, follow=True)  # fmt: skip
    assert response.redirect_chain[-1][0] == "/sessions/"
    assert "could not be launched" in response.content.decode()
    assert not Session.objects.exists()


# --- /s/<token> ------------------------------------------------------------------------------


def _link(crew, hosted, **kwargs):
    made = hosted.repo()
    issued = services.create_share_link(kwargs.pop("by", crew.admin), spec=made.spec,
                                        urlpath="lab/tree/index.ipynb", **kwargs)  # fmt: skip
    return issued


def test_anonymous_is_sent_to_sign_in_and_back(client, crew, hosted):
    issued = _link(crew, hosted)
    response = client.get(f"/s/{issued.token}")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert f"next=/s/{issued.token}" in response["Location"]
    assert client.post(f"/s/{issued.token}").status_code == 302
    assert not Session.objects.exists()


def test_the_share_page_shows_what_will_be_launched(client, crew, hosted):
    issued = _link(crew, hosted, name="Lesson 1")
    response = page(client, crew.outsider, f"/s/{issued.token}")
    html = response.content.decode()
    assert response.status_code == 200 and response["Referrer-Policy"] == "no-referrer"
    assert "Lesson 1" in html and crew.admin.label in html
    assert "lab/tree/index.ipynb" in html and "/share-" in html and "main" in html
    assert "your own credentials" in html and 'method="post"' in html
    assert not Session.objects.exists()  # a GET never launches


def test_a_team_share_page_is_404_for_an_outsider_and_launches_for_a_member(client, crew, hosted):
    issued = _link(crew, hosted, audience="team", team=crew.team)
    assert page(client, crew.outsider, f"/s/{issued.token}").status_code == 404
    client.force_login(crew.outsider)
    assert client.post(f"/s/{issued.token}").status_code == 404
    response = page(client, crew.member, f"/s/{issued.token}")
    assert response.status_code == 200 and "Ocean Lab" in response.content.decode()
    response = client.post(f"/s/{issued.token}")
    session = Session.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/sessions/{session.pk}/"
    assert session.user == crew.member and session.team == crew.team


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_dead_link_is_410(client, crew, hosted, how):
    issued = _link(crew, hosted)
    if how == "revoked":
        services.revoke_share_link(crew.admin, issued.link)
    else:
        ShareLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = page(client, crew.member, f"/s/{issued.token}")
    assert response.status_code == 410
    assert f"SHARE_LINK_{how.upper()}" in response.content.decode()
    assert client.post(f"/s/{issued.token}").status_code == 410
    assert not Session.objects.exists()


def test_an_unknown_link_page_is_404(client, crew):
    assert page(client, crew.member, "/s/shr_" + "x" * 32).status_code == 404


# --- /s/: my links ---------------------------------------------------------------------------


def test_my_links_page_creates_shows_the_secret_once_and_revokes(client, crew, hosted):
    made = hosted.repo()
    client.force_login(crew.member)
    form = {"repository": made.url, "ref": "main", "name": "Mine", "audience": "team",
            "team": "ocean-lab", "days": "3"}  # fmt: skip
    response = client.post("/s/", form)
    assert response.status_code == 302
    link = ShareLink.objects.get()
    assert link.team == crew.team and link.expires_at is not None
    html = client.get("/s/").content.decode()
    assert "Share link created" in html and "Mine" in html
    secret = html.split('id="share-link"')[0].rsplit('value="', 1)[1].split('"', 1)[0]
    assert link.digest == services.tokens.digest(secret.rsplit("/s/", 1)[1])
    assert "Share link created" not in client.get("/s/").content.decode()  # once
    client.post(f"/s/{link.pk}/revoke/")
    link.refresh_from_db()
    assert link.revoked_at is not None


def test_my_links_page_refuses_a_team_i_am_not_in(client, crew, hosted):
    made = hosted.repo()
    client.force_login(crew.outsider)
    response = client.post("/s/", {"repository": made.url, "audience": "team",
                                   "team": "ocean-lab"})  # fmt: skip
    assert response.status_code in (400, 404)
    assert not ShareLink.objects.exists()


def test_someone_elses_link_cannot_be_revoked_from_the_page(client, crew, hosted):
    issued = _link(crew, hosted)
    client.force_login(crew.member)
    assert client.post(f"/s/{issued.link.pk}/revoke/").status_code == 404
    issued.link.refresh_from_db()
    assert issued.link.revoked_at is None
