"""``fetch`` of records and Software Heritage directories, downloading RECORDED responses of
the outside services (Zenodo, Figshare, Software Heritage) replayed with ``responses``; the
bodies are the files in ``recorded/files``."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile

import pytest
import responses

from apps.repos.fetch import fetch
from apps.repos.tests.conftest import recorded_file, recorded_json
from apps.repos.types import RecordFile, ResolvedRepo
from portal.errors import BackendError

ZENODO_FILE = (
    "https://zenodo.org/api/records/3242074/files/binder-examples/requirements-v1.0.zip/content"
)
SWH = "https://archive.softwareheritage.org/api/1"
SWH_DIR = "swh:1:dir:2a7b2d9a3e1b5f4f0c5e0d6b7e6b4a2d1c0f9e8d"
VAULT = f"{SWH}/vault/flat/{SWH_DIR}/"


def record(*files: RecordFile, provider: str = "zenodo") -> ResolvedRepo:
    return ResolvedRepo(
        provider=provider,
        spec="x",
        kind="record",
        repo_url="https://zenodo.org/records/3242074",
        unresolved_ref="",
        resolved_ref="3242074",
        persistent_spec="zenodo/10.5281/zenodo.3242074",
        ref_url="https://doi.org/10.5281/zenodo.3242074",
        host="zenodo.org",
        display_name="zenodo 10.5281/zenodo.3242074",
        files=files,
    )


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_a_single_zip_record_is_unpacked_into_the_checkout(recorded_http, tmp_path):
    body = recorded_file("requirements-v1.0.zip")
    recorded_http.add(responses.GET, ZENODO_FILE, body=body)
    entry = recorded_json("zenodo_files_3242074")["entries"][0]
    repo = record(
        RecordFile(
            url=entry["links"]["content"],
            path=entry["key"],
            size=entry["size"],
            checksum=entry["checksum"],
        )
    )
    lines: list[str] = []
    fetch(repo, tmp_path / "co", log=lines.append)
    # The zip's single top directory is hoisted, the zip and its folder are gone.
    assert sorted(
        p.relative_to(tmp_path / "co").as_posix() for p in (tmp_path / "co").rglob("*")
    ) == [
        "binder",
        "binder/postBuild",
        "index.ipynb",
        "requirements.txt",
    ]
    assert (tmp_path / "co" / "requirements.txt").read_text().startswith("numpy==1.16.4")
    assert any("Unpacking" in line for line in lines)


def test_several_files_are_downloaded_with_checksums_through_redirects(recorded_http, tmp_path):
    requirements, notebook = recorded_file("requirements.txt"), recorded_file("index.ipynb")
    # Figshare's download URLs redirect to storage on another host.
    s3 = "https://s3-eu-west-1.amazonaws.com/pfigshare-u-files/17461883/requirements.txt"
    recorded_http.add(
        responses.GET,
        "https://ndownloader.figshare.com/files/17461883",
        status=302,
        headers={"Location": s3},
    )
    recorded_http.add(responses.GET, s3, body=requirements)
    recorded_http.add(
        responses.GET, "https://ndownloader.figshare.com/files/17461886", body=notebook
    )
    article = recorded_json("figshare_article_9782777_v1")
    files = tuple(
        RecordFile(
            url=f["download_url"],
            path=f"sub/{f['name']}" if f["name"].endswith(".ipynb") else f["name"],
            size=f["size"],
            checksum=f"md5:{f['computed_md5']}",
        )
        for f in article["files"]
        if not f["is_link_only"]
    )
    fetch(record(*files, provider="figshare"), tmp_path / "co")
    assert (tmp_path / "co" / "requirements.txt").read_bytes() == requirements
    assert (tmp_path / "co" / "sub" / "index.ipynb").read_bytes() == notebook


def test_a_checksum_mismatch_fails_and_leaves_nothing(recorded_http, tmp_path):
    recorded_http.add(responses.GET, "https://zenodo.org/f/a.txt", body=b"tampered")
    repo = record(
        RecordFile(url="https://zenodo.org/f/a.txt", path="a.txt", checksum=md5(b"original"))
    )
    with pytest.raises(BackendError) as caught:
        fetch(repo, tmp_path / "co")
    assert caught.value.code == "RECORD_CHECKSUM_MISMATCH"
    assert caught.value.permanent
    assert not (tmp_path / "co").exists()


@pytest.mark.parametrize(
    "path", ["../escape.txt", "/etc/passwd", "a/../../b", "a\\..\\b", ".git/config", "", "x\n"]
)
def test_unsafe_record_paths_are_refused_before_any_download(recorded_http, tmp_path, path):
    repo = record(
        RecordFile(url="https://zenodo.org/f/ok.txt", path="ok.txt"),
        RecordFile(url="https://zenodo.org/f/x", path=path),
    )
    with pytest.raises(BackendError) as caught:
        fetch(repo, tmp_path / "co")
    assert caught.value.code == "RECORD_PATH_UNSAFE"
    assert len(recorded_http.calls) == 0
    assert not (tmp_path / "escape.txt").exists()


def test_the_size_cap_is_enforced(recorded_http, tmp_path, settings):
    settings.BINDERY_RECORD_MAX_BYTES = 10
    recorded_http.add(responses.GET, "https://zenodo.org/f/big.bin", body=b"x" * 11)
    with pytest.raises(BackendError) as caught:
        fetch(
            record(RecordFile(url="https://zenodo.org/f/big.bin", path="big.bin")), tmp_path / "co"
        )
    assert caught.value.code == "RECORD_TOO_LARGE"
    assert not (tmp_path / "co").exists()


def test_declared_sizes_over_the_cap_fail_before_downloading(recorded_http, tmp_path, settings):
    settings.BINDERY_RECORD_MAX_BYTES = 100
    repo = record(
        RecordFile(url="https://zenodo.org/f/a", path="a", size=60),
        RecordFile(url="https://zenodo.org/f/b", path="b", size=60),
    )
    with pytest.raises(BackendError) as caught:
        fetch(repo, tmp_path / "co")
    assert caught.value.code == "RECORD_TOO_LARGE"
    assert len(recorded_http.calls) == 0


def test_a_file_on_a_private_address_is_refused(recorded_http, tmp_path):
    repo = record(RecordFile(url="http://10.0.0.7/secret", path="secret"))
    with pytest.raises(BackendError) as caught:
        fetch(repo, tmp_path / "co")
    assert caught.value.code == "HOST_FORBIDDEN"
    assert len(recorded_http.calls) == 0


def test_a_download_redirected_to_a_private_address_is_refused(recorded_http, tmp_path):
    recorded_http.add(
        responses.GET,
        "https://zenodo.org/f/a.txt",
        status=302,
        headers={"Location": "http://127.0.0.1:8080/admin"},
    )
    with pytest.raises(BackendError) as caught:
        fetch(record(RecordFile(url="https://zenodo.org/f/a.txt", path="a.txt")), tmp_path / "co")
    assert caught.value.code == "REDIRECT_FORBIDDEN"
    assert len(recorded_http.calls) == 1


def test_a_missing_file_is_a_permanent_failure(recorded_http, tmp_path):
    recorded_http.add(responses.GET, "https://zenodo.org/f/gone", status=404)
    with pytest.raises(BackendError) as caught:
        fetch(record(RecordFile(url="https://zenodo.org/f/gone", path="gone")), tmp_path / "co")
    assert caught.value.code == "RECORD_DOWNLOAD_FAILED"
    assert caught.value.permanent


def test_a_zip_with_a_path_outside_is_refused(recorded_http, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../evil.txt", "escaped")
    recorded_http.add(responses.GET, "https://zenodo.org/f/r.zip", body=buf.getvalue())
    with pytest.raises(BackendError) as caught:
        fetch(
            record(RecordFile(url="https://zenodo.org/f/r.zip", path="r.zip")),
            tmp_path / "a" / "co",
        )
    assert caught.value.code == "ARCHIVE_UNSAFE"
    assert not list(tmp_path.rglob("evil.txt"))


def test_a_single_non_zip_file_is_not_unpacked(recorded_http, tmp_path):
    # A single .xlsx is a zip file too; only *.zip records are archives.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
    recorded_http.add(responses.GET, "https://zenodo.org/f/data.xlsx", body=buf.getvalue())
    fetch(
        record(RecordFile(url="https://zenodo.org/f/data.xlsx", path="data.xlsx")), tmp_path / "co"
    )
    assert [p.name for p in (tmp_path / "co").iterdir()] == ["data.xlsx"]


def test_cancel_stops_a_fetch_before_it_downloads(recorded_http, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BackendError) as caught:
        fetch(
            record(RecordFile(url="https://zenodo.org/f/a.txt", path="a.txt")),
            tmp_path / "co",
            cancel=cancel,
        )
    assert caught.value.code == "BUILD_CANCELLED"
    assert len(recorded_http.calls) == 0


def swh_repo() -> ResolvedRepo:
    return ResolvedRepo(
        provider="swhid",
        spec=SWH_DIR,
        kind="swh",
        repo_url=f"https://archive.softwareheritage.org/{SWH_DIR}",
        unresolved_ref="",
        resolved_ref=SWH_DIR,
        persistent_spec=f"swhid/{SWH_DIR}",
        ref_url=f"https://archive.softwareheritage.org/{SWH_DIR}",
        host="archive.softwareheritage.org",
        display_name=f"swh {SWH_DIR}",
        archive_url=VAULT,
    )


def test_swh_vault_is_cooked_then_downloaded_and_unpacked(recorded_http, tmp_path, settings):
    settings.BINDERY_SWH_POLL_INTERVAL = 0
    recorded_http.add(responses.POST, VAULT, json=recorded_json("swh_vault_pending"))
    recorded_http.add(responses.GET, VAULT, json=recorded_json("swh_vault_pending"))
    recorded_http.add(responses.GET, VAULT, json=recorded_json("swh_vault_done"))
    recorded_http.add(
        responses.GET,
        f"{VAULT}raw/",
        body=recorded_file("swh-dir.tar.gz"),
        content_type="application/gzip",
    )
    lines: list[str] = []
    fetch(swh_repo(), tmp_path / "co", log=lines.append)
    co = tmp_path / "co"
    assert sorted(p.relative_to(co).as_posix() for p in co.rglob("*")) == [
        "README.md",
        "binder",
        "binder/runtime.txt",
        "requirements.txt",
    ]
    assert sum("preparing" in line for line in lines) == 2


def test_swh_vault_failure_has_its_code(recorded_http, tmp_path):
    recorded_http.add(responses.POST, VAULT, json=recorded_json("swh_vault_failed"))
    with pytest.raises(BackendError) as caught:
        fetch(swh_repo(), tmp_path / "co")
    assert caught.value.code == "SWH_VAULT_FAILED"
    assert "Internal Server Error" in caught.value.message


def test_a_tarball_with_a_link_outside_is_refused(recorded_http, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("d/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../../etc/passwd"
        tf.addfile(link)
    recorded_http.add(responses.POST, VAULT, json=recorded_json("swh_vault_done"))
    recorded_http.add(responses.GET, f"{VAULT}raw/", body=buf.getvalue())
    with pytest.raises(BackendError) as caught:
        fetch(swh_repo(), tmp_path / "co")
    assert caught.value.code == "ARCHIVE_UNSAFE"
    assert not (tmp_path / "co").exists()
