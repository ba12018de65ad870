"""A team's stored credential opens a private repository only for launches of that team: a
member launching for themselves, or for another team, gets their own credentials only.
Against the real loopback git server, through the function every launch uses to choose
(``builds.services.resolve_input``) and through ``sessions.services.launch``."""

from __future__ import annotations

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.services import resolve_input
from apps.repos import services
from apps.repos.tests.gitserver import GitServer
from apps.sessions.models import Session
from apps.sessions.services import launch
from apps.teams.models import Membership, Role, Team
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(hosted_on_git_server, unique):
    """A private repository that only the team "lab"'s stored credential can read."""
    server = hosted_on_git_server
    name = unique("lab-secret")
    repo = server.create_repo(f"private/{name}", {"requirements.txt": "pandas\n"})
    team = Team.objects.create(name="Lab", slug="lab")
    owner, member = UserFactory(), UserFactory()
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    Membership.objects.create(team=team, user=member, role=Role.MEMBER)
    shared = services.create_credential(
        owner, host=server.host, username=GitServer.username, token=GitServer.token, team=team
    )
    return {"server": server, "spec": f"gh/private/{name}/main", "repo": repo,
            "team": team, "member": member, "credential": shared}  # fmt: skip


def test_a_team_launch_uses_the_teams_credential(lab):
    resolved, credential = resolve_input(lab["member"], spec=lab["spec"], team=lab["team"])
    assert resolved.resolved_ref == lab["repo"].head
    assert resolved.credential_id == lab["credential"].pk
    assert credential == lab["credential"]
    lab["credential"].refresh_from_db()
    assert lab["credential"].last_used_at is not None


def test_a_member_launching_personally_does_not_get_the_teams_credential(lab):
    with pytest.raises(BinderyError) as caught:
        resolve_input(lab["member"], spec=lab["spec"])
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    with pytest.raises(BinderyError) as caught:
        launch(lab["member"], spec=lab["spec"])
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    assert not Session.objects.exists()
    lab["credential"].refresh_from_db()
    assert lab["credential"].last_used_at is None  # never even tried


def test_a_launch_for_another_team_does_not_get_the_teams_credential(lab):
    other = Team.objects.create(name="Other", slug="other")
    Membership.objects.create(team=other, user=lab["member"], role=Role.OWNER)
    with pytest.raises(BinderyError) as caught:
        resolve_input(lab["member"], spec=lab["spec"], team=other)
    assert caught.value.code == "REPO_NOT_FOUND_OR_PRIVATE"
    lab["credential"].refresh_from_db()
    assert lab["credential"].last_used_at is None


def test_a_members_own_credential_still_works_personally(lab):
    own = services.create_credential(
        lab["member"], host=lab["server"].host, username=GitServer.username,
        token=GitServer.token,
    )  # fmt: skip
    resolved, credential = resolve_input(lab["member"], spec=lab["spec"])
    assert resolved.credential_id == own.pk and credential == own
    lab["credential"].refresh_from_db()
    assert lab["credential"].last_used_at is None


def test_credential_used_refuses_a_teams_credential_outside_its_team(lab):
    resolved, _ = resolve_input(lab["member"], spec=lab["spec"], team=lab["team"])
    assert services.credential_used(resolved, lab["member"], team=lab["team"]) == lab["credential"]
    assert services.credential_used(resolved, lab["member"]) is None
    assert services.credential_used(resolved, UserFactory(), team=lab["team"]) is None
