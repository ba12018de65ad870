"""The volumes API and pages: listing, size, archive download, deletion with confirmation."""

from __future__ import annotations

import gzip
import io
import tarfile
from types import SimpleNamespace

import pytest

from apps.accounts.tests.factories import UserFactory
from apps.builds.models import Build
from apps.sessions import services
from apps.sessions.backends.local.backend import LocalSessions
from apps.sessions.models import Session, Volume
from apps.teams.models import Membership, Role, Team

pytestmark = pytest.mark.django_db


@pytest.fixture
def volumes_dir(settings, tmp_path):
    settings.BINDERY_VOLUMES_DIR = tmp_path / "volumes"
    return settings.BINDERY_VOLUMES_DIR


@pytest.fixture
def lab(db):
    owner, member, outsider = (UserFactory(username=n) for n in ("owner", "member", "outsider"))
    team = Team.objects.create(name="Lab", slug="lab")
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    Membership.objects.create(team=team, user=member, role=Role.MEMBER)
    return SimpleNamespace(owner=owner, member=member, outsider=outsider, team=team)


def archive_of(response):
    raw = b"".join(response.streaming_content)
    return raw, tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz")


def test_list_has_home_and_team_volumes(token_client, lab, volumes_dir):
    listed = token_client(lab.member).get("/api/v1/volumes/").json()
    assert {(v["kind"], v["name"]) for v in listed} == {("home", "Home"), ("team", "Team Lab")}
    others = token_client(lab.outsider).get("/api/v1/volumes/").json()
    assert [v["kind"] for v in others] == ["home"]


def test_size_and_archive(token_client, lab, volumes_dir):
    volume = services.home_volume(lab.owner)
    path = LocalSessions().ensure_volume(services.volume_ref(volume))
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("a,b\n1,2\n")
    (path / "notes.txt").write_text("kept")
    client = token_client(lab.owner)
    detail = client.get(f"/api/v1/volumes/{volume.pk}/").json()
    assert detail["size_bytes"] == len("a,b\n1,2\n") + len("kept")
    assert (detail["size_kind"], detail["archive_offered"]) == ("used", True)
    response = client.get(f"/api/v1/volumes/{volume.pk}/archive/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="home.tar.gz"'
    _, archive = archive_of(response)
    with archive:
        assert {"home/notes.txt", "home/data/results.csv"} <= set(archive.getnames())
        assert archive.extractfile("home/notes.txt").read() == b"kept"


def test_archive_keeps_symlinks_as_links(token_client, lab, volumes_dir, tmp_path):
    volume = services.home_volume(lab.owner)
    path = LocalSessions().ensure_volume(services.volume_ref(volume))
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    (path / "link").symlink_to(secret)
    raw, archive = archive_of(token_client(lab.owner).get(f"/api/v1/volumes/{volume.pk}/archive/"))
    with archive:
        link = archive.getmember("home/link")
    assert link.issym() and link.linkname == str(secret)
    assert b"not yours" not in gzip.decompress(raw)  # the target's content is not copied


def test_outsider_gets_404(token_client, lab, volumes_dir):
    volume = services.home_volume(lab.owner)
    client = token_client(lab.outsider)
    for method, path in [("get", ""), ("get", "archive/"), ("delete", "")]:
        url = f"/api/v1/volumes/{volume.pk}/{path}"
        response = getattr(client, method)(url, {"confirm": "Home"}, format="json")
        assert response.status_code == 404, (method, path)
    assert Volume.objects.filter(pk=volume.pk).exists()


def test_delete_needs_the_label_typed(token_client, lab, volumes_dir):
    volume = services.home_volume(lab.owner)
    path = LocalSessions().ensure_volume(services.volume_ref(volume))
    (path / "notes.txt").write_text("kept")
    client = token_client(lab.owner)
    wrong = client.delete(f"/api/v1/volumes/{volume.pk}/", {"confirm": "home"}, format="json")
    assert (wrong.status_code, wrong.json()["error"]) == (400, "CONFIRMATION_REQUIRED")
    assert (path / "notes.txt").exists()
    right = client.delete(f"/api/v1/volumes/{volume.pk}/", {"confirm": "Home"}, format="json")
    assert right.status_code == 204
    assert not path.exists()
    assert not Volume.objects.filter(pk=volume.pk).exists()


def test_volume_in_use_cannot_be_deleted(token_client, lab, volumes_dir):
    volume = services.home_volume(lab.owner)
    build = Build.objects.create(
        provider="git", spec="x", repo_url="x", repo_slug="x", display_name="x",
        resolved_ref="0" * 40, resolved={}, build_key="k", status="ready",
    )  # fmt: skip
    Session.objects.create(
        user=lab.owner, build=build, hub_user=lab.owner.hub_name, provider="git", spec="x",
        status="ready",
    )  # fmt: skip
    url = f"/api/v1/volumes/{volume.pk}/"
    response = token_client(lab.owner).delete(url, {"confirm": "Home"}, format="json")
    assert (response.status_code, response.json()["error"]) == (409, "VOLUME_IN_USE")
    assert Volume.objects.filter(pk=volume.pk).exists()


def test_only_team_managers_delete_the_team_volume(token_client, lab, volumes_dir):
    volume = services.team_volume(lab.team)
    url = f"/api/v1/volumes/{volume.pk}/"
    refused = token_client(lab.member).delete(url, {"confirm": "Team Lab"}, format="json")
    assert refused.status_code == 403
    assert Volume.objects.filter(pk=volume.pk).exists()
    allowed = token_client(lab.owner).delete(url, {"confirm": "Team Lab"}, format="json")
    assert allowed.status_code == 204


def test_volumes_page(client, lab, volumes_dir):
    client.force_login(lab.owner)
    html = client.get("/volumes/").content.decode()
    assert "Home" in html and "Team Lab" in html
    volume = Volume.objects.get(user=lab.owner)
    client.post(f"/volumes/{volume.pk}/delete/", {"confirm": "nope"})
    assert Volume.objects.filter(pk=volume.pk).exists()


def test_volumes_page_offers_the_download_and_says_size(client, lab, volumes_dir):
    """Local volumes: a .tar.gz per volume, and the bytes the files use ("Size")."""
    client.force_login(lab.owner)
    html = client.get("/volumes/").content.decode()
    volume = Volume.objects.get(user=lab.owner)
    assert f'href="/api/v1/volumes/{volume.pk}/archive/"' in html
    assert "Download .tar.gz" in html
    assert "<th>Size</th>" in html and "Capacity" not in html
    assert "archive-not-offered" not in html


def test_volume_fields_are_in_the_schema(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    fields = schema["components"]["schemas"]["Volume"]["properties"]
    assert {"size_bytes", "size_measured_at", "links"} <= set(fields)  # the names kept
    assert fields["archive_offered"]["type"] == "boolean"
    assert fields["size_kind"]["readOnly"] is True
    [enum] = fields["size_kind"]["allOf"]
    assert enum == {"$ref": "#/components/schemas/SizeKindEnum"}
    assert schema["components"]["schemas"]["SizeKindEnum"]["enum"] == ["used", "capacity"]
