"""Record providers and swhid, resolved against RECORDED responses of the outside services
(Zenodo, Figshare, Dataverse, HydroShare, CKAN, Software Heritage, doi.org) replayed with
``responses``: no outside host is reachable from the test machines. The files in
``recorded/`` have the shape of each real API's answer."""

from __future__ import annotations

import pytest
import responses

from apps.repos import services
from apps.repos.tests.conftest import recorded_json
from apps.repos.types import RecordFile
from portal.errors import BinderyError

pytestmark = pytest.mark.django_db

ZENODO_API = "https://zenodo.org/api/records/3242074"
HS_ID = "b8f6eae9d89241cf8b5904033460af61"
HS = "https://www.hydroshare.org"
CKAN_API = "https://demo.ckan.org/api/3/action/"
SWH = "https://archive.softwareheritage.org/api/1"
SWH_REV = "5bd2bd4f3c8e9a1b7d6c0e2f4a3b5c7d9e1f0a2b"
SWH_DIR = "2a7b2d9a3e1b5f4f0c5e0d6b7e6b4a2d1c0f9e8d"


def redirect(mock, url, location, status=302):
    mock.add(responses.GET, url, status=status, headers={"Location": location})


def zenodo_api(mock):
    mock.add(responses.GET, ZENODO_API, json=recorded_json("zenodo_record_3242074"))
    mock.add(responses.GET, f"{ZENODO_API}/files", json=recorded_json("zenodo_files_3242074"))


# --- Zenodo -----------------------------------------------------------------------------------


def test_zenodo_doi_follows_doi_org_to_the_record(recorded_http):
    # doi.org → zenodo.org/doi/… → zenodo.org/records/<id> (never fetched: the API is).
    redirect(
        recorded_http,
        "https://doi.org/10.5281/zenodo.3242074",
        "https://zenodo.org/doi/10.5281/zenodo.3242074",
    )
    redirect(
        recorded_http, "https://zenodo.org/doi/10.5281/zenodo.3242074", "/records/3242074", 301
    )
    zenodo_api(recorded_http)
    resolved = services.resolve("zenodo", "10.5281/zenodo.3242074", None)
    assert resolved.kind == "record"
    assert resolved.resolved_ref == "3242074"
    assert resolved.persistent_spec == "zenodo/10.5281/zenodo.3242074"
    assert resolved.ref_url == "https://doi.org/10.5281/zenodo.3242074"
    assert resolved.repo_url == "https://zenodo.org/records/3242074"
    assert resolved.host == "zenodo.org"
    assert resolved.display_name == "zenodo 10.5281/zenodo.3242074"
    assert resolved.files == (
        RecordFile(
            url=f"{ZENODO_API}/files/binder-examples/requirements-v1.0.zip/content",
            path="binder-examples/requirements-v1.0.zip",
            size=992,
            checksum="md5:3558f124715ecbe28456b53a7eed47fc",
        ),
    )


def test_zenodo_concept_doi_resolves_to_the_latest_version(recorded_http):
    redirect(
        recorded_http,
        "https://doi.org/10.5281/zenodo.3242073",
        "https://zenodo.org/records/3242074",
    )
    zenodo_api(recorded_http)
    resolved = services.resolve("zenodo", "doi:10.5281/zenodo.3242073", None)
    assert resolved.resolved_ref == "3242074"
    assert resolved.persistent_spec == "zenodo/10.5281/zenodo.3242074"
    assert resolved.spec == "doi:10.5281/zenodo.3242073"


def test_zenodo_record_id_needs_no_doi_lookup(recorded_http):
    zenodo_api(recorded_http)
    assert services.resolve("zenodo", "3242074", None).resolved_ref == "3242074"


def test_zenodo_unknown_doi(recorded_http):
    recorded_http.add(
        responses.GET, "https://doi.org/10.5281/zenodo.1", status=404, body="DOI Not Found"
    )
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "10.5281/zenodo.1", None)
    assert caught.value.code == "RECORD_NOT_FOUND"


def test_zenodo_doi_that_lands_elsewhere(recorded_http):
    redirect(recorded_http, "https://doi.org/10.5281/zenodo.2", "https://example.org/paper")
    recorded_http.add(responses.GET, "https://example.org/paper", body="<html></html>")
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "10.5281/zenodo.2", None)
    assert caught.value.code == "RECORD_NOT_FOUND"
    assert "does not point to a Zenodo record" in caught.value.message


def test_a_redirect_to_a_private_address_is_refused_and_not_followed(recorded_http):
    redirect(recorded_http, "https://doi.org/10.5281/zenodo.3", "http://169.254.169.254/latest")
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "10.5281/zenodo.3", None)
    assert caught.value.code == "REDIRECT_FORBIDDEN"
    assert len(recorded_http.calls) == 1


def test_a_redirect_to_a_non_http_scheme_is_refused(recorded_http):
    redirect(recorded_http, "https://doi.org/10.5281/zenodo.4", "file:///etc/passwd")
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "10.5281/zenodo.4", None)
    assert caught.value.code == "REDIRECT_FORBIDDEN"


def test_an_outside_service_error_is_provider_unavailable(recorded_http):
    recorded_http.add(responses.GET, ZENODO_API, status=503, body="maintenance")
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "3242074", None)
    assert caught.value.code == "PROVIDER_UNAVAILABLE"
    assert caught.value.status == 503


def test_an_unreachable_service_is_provider_unavailable(recorded_http):
    # Nothing is recorded for this URL: responses refuses the connection.
    with pytest.raises(BinderyError) as caught:
        services.resolve("zenodo", "3242074", None)
    assert caught.value.code == "PROVIDER_UNAVAILABLE"


# --- Figshare ---------------------------------------------------------------------------------


def test_figshare_doi_with_version(recorded_http):
    recorded_http.add(
        responses.GET,
        "https://api.figshare.com/v2/articles/9782777/versions/1",
        json=recorded_json("figshare_article_9782777_v1"),
    )
    resolved = services.resolve("figshare", "10.6084/m9.figshare.9782777.v1", None)
    assert resolved.resolved_ref == "9782777.v1"
    assert resolved.persistent_spec == "figshare/10.6084/m9.figshare.9782777.v1"
    assert resolved.ref_url == "https://doi.org/10.6084/m9.figshare.9782777.v1"
    assert resolved.repo_url == (
        "https://figshare.com/articles/software/binder-examples_requirements/9782777"
    )
    # The link-only entry is not a file to download.
    assert [(f.path, f.checksum) for f in resolved.files] == [
        ("requirements.txt", "md5:80b04627416fc453542ed7f7ff22690b"),
        ("index.ipynb", "md5:2362f341f4015246c5adde62e1e0b53f"),
    ]
    assert resolved.files[0].url == "https://ndownloader.figshare.com/files/17461883"


def test_figshare_without_version_is_version_one(recorded_http):
    recorded_http.add(
        responses.GET,
        "https://api.figshare.com/v2/articles/9782777/versions/1",
        json=recorded_json("figshare_article_9782777_v1"),
    )
    resolved = services.resolve("figshare", "https://doi.org/10.6084/m9.figshare.9782777", None)
    assert resolved.resolved_ref == "9782777.v1"


def test_figshare_other_doi_goes_through_doi_org(recorded_http):
    redirect(
        recorded_http,
        "https://doi.org/10.25405/data.ncl.9782777",
        "https://data.ncl.figshare.com/articles/dataset/binder/9782777/1",
    )
    recorded_http.add(
        responses.GET,
        "https://api.figshare.com/v2/articles/9782777/versions/1",
        json=recorded_json("figshare_article_9782777_v1"),
    )
    assert services.resolve("figshare", "10.25405/data.ncl.9782777", None).resolved_ref == (
        "9782777.v1"
    )


def test_figshare_unknown_version(recorded_http):
    recorded_http.add(
        responses.GET,
        "https://api.figshare.com/v2/articles/9782777/versions/9",
        status=404,
        json={"message": "Entity not found: article version", "code": "EntityNotFound"},
    )
    with pytest.raises(BinderyError) as caught:
        services.resolve("figshare", "10.6084/m9.figshare.9782777.v9", None)
    assert caught.value.code == "RECORD_NOT_FOUND"


# --- Dataverse --------------------------------------------------------------------------------


DV_API = "https://dataverse.harvard.edu/api/datasets/:persistentId"
DV_QUERY = responses.matchers.query_param_matcher({"persistentId": "doi:10.7910/DVN/TJCLKP"})


def test_dataverse_doi_finds_its_installation(recorded_http):
    redirect(
        recorded_http,
        "https://doi.org/10.7910/DVN/TJCLKP",
        "https://dataverse.harvard.edu/citation?persistentId=doi:10.7910/DVN/TJCLKP",
    )
    recorded_http.add(
        responses.GET, DV_API, json=recorded_json("dataverse_dataset_TJCLKP"), match=[DV_QUERY]
    )
    resolved = services.resolve("dataverse", "10.7910/DVN/TJCLKP", None)
    assert resolved.resolved_ref == "3035124.v3.0"
    assert resolved.persistent_spec == "dataverse/10.7910/DVN/TJCLKP"
    assert resolved.ref_url == "https://doi.org/10.7910/DVN/TJCLKP"
    assert resolved.host == "dataverse.harvard.edu"
    # Folders are kept, ingested tables come in their original format, restricted files
    # (which need an account) are left out.
    assert resolved.files == (
        RecordFile(
            url="https://dataverse.harvard.edu/api/access/datafile/3450715",
            path="binder/requirements.txt",
            size=32,
            checksum="md5:80b04627416fc453542ed7f7ff22690b",
        ),
        RecordFile(
            url="https://dataverse.harvard.edu/api/access/datafile/3450716?format=original",
            path="data.csv",
            size=None,
            checksum="md5:2e04193b5f76da72bfda3e7e56b5abc0",
        ),
    )


def test_dataverse_dataset_url(recorded_http):
    recorded_http.add(
        responses.GET, DV_API, json=recorded_json("dataverse_dataset_TJCLKP"), match=[DV_QUERY]
    )
    url = "https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP"
    assert services.resolve("dataverse", url, None).resolved_ref == "3035124.v3.0"


def test_dataverse_doi_landing_on_a_private_address_is_refused(recorded_http):
    redirect(
        recorded_http,
        "https://doi.org/10.7910/DVN/EVIL00",
        "http://10.1.2.3/citation?persistentId=doi:10.7910/DVN/EVIL00",
    )
    with pytest.raises(BinderyError) as caught:
        services.resolve("dataverse", "10.7910/DVN/EVIL00", None)
    assert caught.value.code == "REDIRECT_FORBIDDEN"
    assert len(recorded_http.calls) == 1


def test_dataverse_unknown_dataset(recorded_http):
    recorded_http.add(
        responses.GET,
        "https://dataverse.harvard.edu/api/datasets/:persistentId",
        status=404,
        json=recorded_json("dataverse_not_found"),
    )
    url = "https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/NOPE00"
    with pytest.raises(BinderyError) as caught:
        services.resolve("dataverse", url, None)
    assert caught.value.code == "RECORD_NOT_FOUND"


# --- HydroShare -------------------------------------------------------------------------------


def hydroshare_api(mock):
    mock.add(
        responses.GET,
        f"{HS}/hsapi/resource/{HS_ID}/scimeta/elements",
        json=recorded_json(f"hydroshare_scimeta_{HS_ID}"),
    )
    mock.add(
        responses.GET,
        f"{HS}/hsapi/resource/{HS_ID}/files/",
        json=recorded_json("hydroshare_files_page1"),
        match=[responses.matchers.query_string_matcher("")],
    )
    mock.add(
        responses.GET,
        f"{HS}/hsapi/resource/{HS_ID}/files/?page=2",
        json=recorded_json("hydroshare_files_page2"),
        match=[responses.matchers.query_string_matcher("page=2")],
    )


@pytest.mark.parametrize(
    "spec", [HS_ID, f"https://www.hydroshare.org/resource/{HS_ID}/", f"10.4211/hs.{HS_ID}"]
)
def test_hydroshare_resource_id_url_or_doi(recorded_http, spec):
    hydroshare_api(recorded_http)
    resolved = services.resolve("hydroshare", spec, None)
    # Versioned by the last modification (2023-05-10T13:37:47Z).
    assert resolved.resolved_ref == f"{HS_ID}.v1683725867"
    assert resolved.persistent_spec == f"hydroshare/{HS}/resource/{HS_ID}"
    assert resolved.ref_url == f"{HS}/resource/{HS_ID}"
    assert [(f.path, f.size) for f in resolved.files] == [
        ("requirements.txt", 32),
        ("notebooks/index.ipynb", 66),
    ]


# --- CKAN -------------------------------------------------------------------------------------


def test_ckan_dataset_url(recorded_http):
    recorded_http.add(
        responses.GET,
        f"{CKAN_API}package_show?id=my-sample-dataset-001",
        json=recorded_json("ckan_package_show"),
        match=[responses.matchers.query_param_matcher({"id": "my-sample-dataset-001"})],
    )
    resolved = services.resolve(
        "ckan", "https%3A%2F%2Fdemo.ckan.org%2Fdataset%2Fmy-sample-dataset-001", None
    )
    assert resolved.resolved_ref == "my-sample-dataset-001.v1716366321"
    assert resolved.persistent_spec == "ckan/https://demo.ckan.org/dataset/my-sample-dataset-001"
    assert resolved.host == "demo.ckan.org"
    assert [f.path for f in resolved.files] == ["requirements.txt", "data.csv"]


def test_ckan_pinned_activity(recorded_http):
    activity = "6a1f0c2e-7b3d-4e58-9c61-0d2e3f4a5b6c"
    recorded_http.add(
        responses.GET,
        f"{CKAN_API}activity_show",
        json=recorded_json("ckan_activity_show"),
        match=[responses.matchers.query_param_matcher({"id": activity, "include_data": "true"})],
    )
    url = f"https://demo.ckan.org/dataset/my-sample-dataset-001?activity_id={activity}"
    resolved = services.resolve("ckan", url, None)
    assert resolved.resolved_ref == "my-sample-dataset-001.v1716366173"
    assert resolved.persistent_spec == f"ckan/{url}"
    assert [f.path for f in resolved.files] == ["requirements.txt"]


def test_ckan_unknown_dataset(recorded_http):
    recorded_http.add(
        responses.GET,
        f"{CKAN_API}package_show",
        status=404,
        json=recorded_json("ckan_not_found"),
    )
    with pytest.raises(BinderyError) as caught:
        services.resolve("ckan", "https://demo.ckan.org/dataset/nope", None)
    assert caught.value.code == "RECORD_NOT_FOUND"


# --- Software Heritage ------------------------------------------------------------------------


def test_swhid_revision_resolves_to_its_directory(recorded_http):
    recorded_http.add(
        responses.GET, f"{SWH}/revision/{SWH_REV}/", json=recorded_json("swh_revision")
    )
    spec = f"swh:1:rev:{SWH_REV};origin=https://github.com/binder-examples/requirements"
    resolved = services.resolve("swhid", spec, None)
    assert resolved.kind == "swh"
    assert resolved.resolved_ref == f"swh:1:dir:{SWH_DIR}"
    assert resolved.archive_url == f"{SWH}/vault/flat/swh:1:dir:{SWH_DIR}/"
    assert resolved.persistent_spec == f"swhid/swh:1:rev:{SWH_REV}"
    assert resolved.ref_url == f"https://archive.softwareheritage.org/swh:1:dir:{SWH_DIR}"


def test_swhid_directory_is_checked_to_exist(recorded_http):
    recorded_http.add(
        responses.GET, f"{SWH}/directory/{SWH_DIR}/", json=recorded_json("swh_directory")
    )
    resolved = services.resolve("swhid", f"swh:1:dir:{SWH_DIR}", None)
    assert resolved.resolved_ref == f"swh:1:dir:{SWH_DIR}"


def test_swhid_unknown(recorded_http):
    missing = "0" * 40
    recorded_http.add(
        responses.GET,
        f"{SWH}/revision/{missing}/",
        status=404,
        json=recorded_json("swh_not_found"),
    )
    with pytest.raises(BinderyError) as caught:
        services.resolve("swhid", f"swh:1:rev:{missing}", None)
    assert caught.value.code == "RECORD_NOT_FOUND"


def test_swhid_content_is_not_launchable(recorded_http):
    with pytest.raises(BinderyError) as caught:
        services.resolve("swhid", f"swh:1:cnt:{SWH_DIR}", None)
    assert caught.value.code == "SPEC_INVALID"
