"""The builds API for the requester, another user, and anonymous clients."""

from __future__ import annotations

import pytest

from apps.builds.models import Build, BuildLogLine
from apps.repos.services import create_credential

pytestmark = pytest.mark.django_db


def test_post_repo_url_creates_then_joins(token_client, alice, public_repo):
    client = token_client(alice)
    first = client.post("/api/v1/builds/", {"repo_url": public_repo.url, "ref": "main"},
                        format="json")  # fmt: skip
    assert first.status_code == 201, first.json()
    body = first.json()
    assert body["resolved_ref"] == public_repo.head
    assert body["status"] == "pending" and body["private"] is False
    assert body["links"]["events"] == f"/api/v1/builds/{body['id']}/events/"
    second = client.post("/api/v1/builds/", {"repo_url": public_repo.url, "ref": "main"},
                         format="json")  # fmt: skip
    assert second.status_code == 200
    assert second.json()["id"] == body["id"]
    assert Build.objects.count() == 1


def test_post_spec(token_client, alice, public_repo):
    from urllib.parse import quote

    spec = f"git/{quote(public_repo.url, safe='')}/main"
    response = token_client(alice).post("/api/v1/builds/", {"spec": spec}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["provider"] == "git"


def test_post_needs_exactly_one_of_spec_and_url(token_client, alice):
    response = token_client(alice).post("/api/v1/builds/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_ERROR"


def test_unknown_ref_is_a_clear_error_and_stores_nothing(token_client, alice, public_repo):
    response = token_client(alice).post(
        "/api/v1/builds/", {"repo_url": public_repo.url, "ref": "no-such-branch"}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"] == "REF_NOT_FOUND"
    assert Build.objects.count() == 0


def test_anonymous_gets_401(api, public_repo):
    assert api.get("/api/v1/builds/").status_code == 401
    response = api.post("/api/v1/builds/", {"repo_url": public_repo.url}, format="json")
    assert response.status_code == 401
    assert Build.objects.count() == 0


def test_detail_log_and_list(token_client, alice, bob, public_repo):
    client = token_client(alice)
    build_id = client.post("/api/v1/builds/", {"repo_url": public_repo.url},
                           format="json").json()["id"]  # fmt: skip
    BuildLogLine.objects.bulk_create(
        BuildLogLine(build_id=build_id, n=n, phase="building", text=f"line {n}") for n in (1, 2, 3)
    )
    log = client.get(f"/api/v1/builds/{build_id}/log/?after=1").json()
    assert [line["text"] for line in log["lines"]] == ["line 2", "line 3"]
    assert log["next_after"] == 3
    other = token_client(bob)
    assert other.get(f"/api/v1/builds/{build_id}/").status_code == 200  # public content
    assert other.get("/api/v1/builds/?mine=1").json()["results"] == []
    assert len(client.get("/api/v1/builds/?mine=1").json()["results"]) == 1


def test_private_build_is_404_for_outsider(token_client, alice, bob, private_repo, git_host):
    create_credential(alice, host=git_host.host, token=git_host.token, username=git_host.username)
    client = token_client(alice)
    response = client.post("/api/v1/builds/", {"repo_url": private_repo.url}, format="json")
    assert response.status_code == 201
    build_id = response.json()["id"]
    assert response.json()["private"] is True
    outsider = token_client(bob)
    for path in ("", "log/"):
        assert outsider.get(f"/api/v1/builds/{build_id}/{path}").status_code == 404
    assert outsider.post(f"/api/v1/builds/{build_id}/cancel/").status_code == 404
    assert build_id not in [b["id"] for b in outsider.get("/api/v1/builds/").json()["results"]]
    assert Build.objects.get(pk=build_id).status == "pending"


def test_private_repo_without_credential_fails_clearly(token_client, bob, private_repo):
    response = token_client(bob).post(
        "/api/v1/builds/", {"repo_url": private_repo.url}, format="json"
    )
    assert response.status_code in (403, 404)
    assert response.json()["error"] == "REPO_NOT_FOUND_OR_PRIVATE"


def test_cancel_via_api(token_client, alice, bob, public_repo):
    client = token_client(alice)
    build_id = client.post("/api/v1/builds/", {"repo_url": public_repo.url},
                           format="json").json()["id"]  # fmt: skip
    assert token_client(bob).post(f"/api/v1/builds/{build_id}/cancel/").status_code == 403
    response = client.post(f"/api/v1/builds/{build_id}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/builds/{build_id}/cancel/")
    assert (again.status_code, again.json()["error"]) == (409, "BUILD_NOT_CANCELLABLE")


def test_list_query_count_is_flat(token_client, alice, public_repo, git_host,
                                  django_assert_max_num_queries):  # fmt: skip
    client = token_client(alice)
    for i in range(6):
        git_host.commit(public_repo, {"n.txt": str(i)})
        client.post("/api/v1/builds/", {"repo_url": public_repo.url}, format="json")
    with django_assert_max_num_queries(6):
        assert len(client.get("/api/v1/builds/").json()["results"]) == 6
