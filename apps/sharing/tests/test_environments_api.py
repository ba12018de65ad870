"""Team environments through the API, for owner, admin, member, outsider and anonymous,
against repositories on the real loopback git server: status, error code, database state.
Launches enqueue tasks that no worker runs here: the Session row is what they leave."""

from __future__ import annotations

import pytest

from apps.builds.models import Build
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.models import Session
from apps.sharing.models import TeamEnvironment
from apps.sharing.tests.conftest import store_credential
from apps.teams.models import Team

pytestmark = pytest.mark.django_db
BASE = "/api/v1/teams/ocean-lab/environments/"


def expect(response, status, code=None):
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error"] == code
    return response.json() if response.content else None


@pytest.fixture
def env(crew, hosted):
    """A public repository kept as an environment of the crew's team (following main)."""
    made = hosted.repo()
    environment = TeamEnvironment.objects.create(
        team=crew.team, name="Notebooks", provider="gh", spec=made.spec[3:],
        urlpath="lab/tree/index.ipynb", created_by=crew.admin,
    )  # fmt: skip
    environment.made = made
    return environment


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_managers_add_an_environment_resolved_now(crew, hosted, token_client, role):
    made = hosted.repo()
    body = expect(token_client(getattr(crew, role)).post(BASE, {
        "name": "Course", "spec": made.spec, "follow_branch": False,
        "urlpath": "lab/tree/index.ipynb", "cpu": 1.5, "memory_bytes": 512 * 1024**2,
    }, format="json"), 201)  # fmt: skip
    row = TeamEnvironment.objects.get()
    assert body["id"] == row.pk and body["team"] == "ocean-lab"
    assert row.created_by == getattr(crew, role)
    assert (row.provider, row.spec) == ("gh", made.spec[3:])
    assert row.resolved_ref == made.repo.head
    assert body["launch_spec"] == row.pinned_spec == f"gh/{made.name}/{made.repo.head}"
    assert (row.cpu, row.memory_bytes) == (1.5, 512 * 1024**2)


def test_an_environment_from_a_url_and_ref_follows_the_branch(crew, hosted, token_client):
    made = hosted.repo()
    body = expect(token_client(crew.owner).post(BASE, {
        "name": "By URL", "repo_url": made.url, "ref": "main",
    }, format="json"), 201)  # fmt: skip
    assert body["follow_branch"] is True and body["launch_spec"] == body["spec"]
    assert body["resolved_ref"] == made.repo.head


def test_members_cannot_create_change_or_delete(crew, env, token_client):
    client = token_client(crew.member)
    before = list(TeamEnvironment.objects.values())
    expect(client.post(BASE, {"name": "x", "spec": env.full_spec}, format="json"),
           403, "PERMISSION_DENIED")  # fmt: skip
    expect(client.patch(f"{BASE}{env.pk}/", {"name": "renamed"}, format="json"),
           403, "PERMISSION_DENIED")  # fmt: skip
    expect(client.put(f"{BASE}{env.pk}/", {"name": "renamed", "spec": env.full_spec},
                      format="json"), 403, "PERMISSION_DENIED")  # fmt: skip
    expect(client.delete(f"{BASE}{env.pk}/"), 403, "PERMISSION_DENIED")
    assert list(TeamEnvironment.objects.values()) == before


def test_members_list_and_read(crew, env, token_client):
    client = token_client(crew.member)
    listed = expect(client.get(BASE), 200)
    assert [e["id"] for e in listed["results"]] == [env.pk]
    detail = expect(client.get(f"{BASE}{env.pk}/"), 200)
    assert detail["name"] == "Notebooks" and detail["urlpath"] == "lab/tree/index.ipynb"
    assert detail["links"]["launch"] == f"{BASE}{env.pk}/launch/"


def test_a_member_launches_a_team_environment(crew, env, token_client):
    body = expect(token_client(crew.member).post(f"{BASE}{env.pk}/launch/"), 201)
    session = Session.objects.get()
    assert body == dict(SessionSerializer(session).data)
    assert session.user == crew.member and session.team == crew.team
    assert session.status in (Session.Status.BUILDING, Session.Status.LAUNCHING)
    assert session.urlpath == "lab/tree/index.ipynb"
    assert session.build.resolved_ref == env.made.repo.head
    assert session.build.team == crew.team and session.build.requested_by == crew.member


def test_an_outsider_gets_404_for_everything(crew, env, token_client):
    client = token_client(crew.outsider)
    expect(client.get(BASE), 404)
    expect(client.post(BASE, {"name": "x", "spec": env.full_spec}, format="json"), 404)
    expect(client.get(f"{BASE}{env.pk}/"), 404)
    expect(client.patch(f"{BASE}{env.pk}/", {"name": "x"}, format="json"), 404)
    expect(client.delete(f"{BASE}{env.pk}/"), 404)
    expect(client.post(f"{BASE}{env.pk}/launch/"), 404)
    assert not Session.objects.exists()
    assert TeamEnvironment.objects.get().name == "Notebooks"


def test_anonymous_is_not_authenticated(crew, env, api):
    expect(api.get(BASE), 401, "NOT_AUTHENTICATED")
    expect(api.post(f"{BASE}{env.pk}/launch/"), 401, "NOT_AUTHENTICATED")
    assert not Session.objects.exists()


def test_another_teams_environment_is_404_through_my_team(crew, env, token_client):
    other = Team.objects.create(name="Other", slug="other")
    theirs = TeamEnvironment.objects.create(team=other, name="t", provider="gh", spec=env.spec)
    client = token_client(crew.owner)
    expect(client.get(f"{BASE}{theirs.pk}/"), 404)
    expect(client.post(f"{BASE}{theirs.pk}/launch/"), 404)
    expect(client.delete(f"{BASE}{theirs.pk}/"), 404)
    assert TeamEnvironment.objects.filter(pk=theirs.pk).exists()


def test_a_pinned_environment_launches_the_saved_commit(crew, hosted, token_client):
    made = hosted.repo()
    admin = token_client(crew.admin)
    pinned = expect(admin.post(BASE, {"name": "Pinned", "spec": made.spec,
                                      "follow_branch": False}, format="json"), 201)  # fmt: skip
    following = expect(admin.post(BASE, {"name": "Following", "spec": made.spec},
                                  format="json"), 201)  # fmt: skip
    first = made.repo.head
    newer = hosted.server.commit(made.repo, {"requirements.txt": "six\n"})
    member = token_client(crew.member)
    expect(member.post(f"{BASE}{pinned['id']}/launch/"), 201)
    expect(member.post(f"{BASE}{following['id']}/launch/"), 201)
    refs = [s.build.resolved_ref for s in Session.objects.order_by("id")]
    assert refs == [first, newer]
    # Pinning again (follow_branch false once more) takes the branch's commit of now.
    body = expect(admin.patch(f"{BASE}{pinned['id']}/", {"follow_branch": False},
                              format="json"), 200)  # fmt: skip
    assert body["resolved_ref"] == newer


@pytest.mark.parametrize("field,value", [("cpu", 0), ("cpu", -1), ("memory_bytes", 255 * 1024**2)])
def test_resources_are_validated(crew, env, token_client, field, value):
    client = token_client(crew.owner)
    body = expect(client.post(BASE, {"name": "x", "spec": env.full_spec, field: value},
                              format="json"), 400, "VALIDATION_ERROR")  # fmt: skip
    assert field in body["fields"]
    expect(client.patch(f"{BASE}{env.pk}/", {field: value}, format="json"),
           400, "VALIDATION_ERROR")  # fmt: skip
    env.refresh_from_db()
    assert TeamEnvironment.objects.count() == 1 and env.cpu is None and env.memory_bytes is None


def test_a_bad_urlpath_or_repository_is_refused_and_nothing_stored(crew, hosted, token_client):
    client = token_client(crew.owner)
    made = hosted.repo()
    expect(client.post(BASE, {"name": "x", "spec": made.spec, "urlpath": "../../hub/admin"},
                       format="json"), 400, "URLPATH_INVALID")  # fmt: skip
    expect(client.post(BASE, {"name": "x", "spec": "gh/nobody/nothing-here/main"},
                       format="json"), 404, "REPO_NOT_FOUND_OR_PRIVATE")  # fmt: skip
    expect(client.post(BASE, {"name": "x"}, format="json"), 400, "VALIDATION_ERROR")
    assert not TeamEnvironment.objects.exists()


def test_put_replaces_and_patch_changes_some(crew, env, hosted, token_client):
    client = token_client(crew.admin)
    body = expect(client.patch(f"{BASE}{env.pk}/", {"name": "Renamed", "cpu": 2},
                               format="json"), 200)  # fmt: skip
    assert body["name"] == "Renamed" and body["cpu"] == 2.0
    assert body["urlpath"] == "lab/tree/index.ipynb"
    other = hosted.repo()
    body = expect(client.put(f"{BASE}{env.pk}/", {"name": "Other", "spec": other.spec},
                             format="json"), 200)  # fmt: skip
    env.refresh_from_db()
    assert (env.name, env.spec, env.urlpath, env.cpu) == ("Other", other.spec[3:], "", None)
    assert env.resolved_ref == other.repo.head


def test_managers_delete(crew, env, token_client):
    expect(token_client(crew.admin).delete(f"{BASE}{env.pk}/"), 204)
    assert not TeamEnvironment.objects.exists()


def test_a_team_environment_of_a_private_repo_uses_the_teams_credential(crew, hosted, token_client):
    made = hosted.repo(private=True)
    shared = store_credential(crew.owner, hosted.server.host, team=crew.team)
    created = expect(token_client(crew.admin).post(BASE, {"name": "Private", "spec": made.spec},
                                                   format="json"), 201)  # fmt: skip
    expect(token_client(crew.member).post(f"{BASE}{created['id']}/launch/"), 201)
    session = Session.objects.get()
    assert session.team == crew.team and session.user == crew.member
    assert session.build.credential == shared and session.build.scope


def test_launch_passes_the_environments_resources(crew, env, token_client):
    env.cpu, env.memory_bytes = 1.0, 512 * 1024**2
    env.save(update_fields=["cpu", "memory_bytes"])
    expect(token_client(crew.member).post(f"{BASE}{env.pk}/launch/"), 201)
    session = Session.objects.get()
    assert session.memory_bytes == 512 * 1024**2
    assert session.cpu == 1.0


def test_list_queries_do_not_grow_with_rows(crew, env, token_client, django_assert_max_num_queries):
    for n in range(5):
        TeamEnvironment.objects.create(team=crew.team, name=f"e{n}", provider="gh", spec=env.spec)
    client = token_client(crew.member)
    with django_assert_max_num_queries(8):
        body = expect(client.get(BASE), 200)
    assert body["count"] == 6
    assert not Build.objects.exists()
