"""Record providers: a DOI or record id → a versioned, downloadable record.

Spec formats and resolution follow BinderHub (resolved refs, persistent specs, ref URLs):

- ``zenodo``: a DOI (``10.5281/zenodo.3242074``, ``doi:…``, ``https://doi.org/…``), a
  record id or a record URL. The DOI is followed through doi.org (a concept DOI lands on the
  latest version); resolved ref = the record id; persistent spec = the version's DOI.
- ``figshare``: a DOI or article URL; ``10.6084/m9.figshare.<id>[.v<n>]`` is read directly,
  other DOIs through doi.org; no version means version 1 (BinderHub); resolved ref =
  ``<id>.v<n>``.
- ``dataverse``: a DOI (any installation, found through doi.org) or a dataset URL
  (``https://host/dataset.xhtml?persistentId=doi:…``); resolved ref =
  ``<dataset id>.v<major>.<minor>``; persistent spec = ``<authority>/<identifier>``.
- ``hydroshare``: a resource id, URL or DOI (the 32-hex id anywhere in it); resolved ref =
  ``<id>.v<epoch of last modification>``; persistent spec = the resource URL.
- ``ckan``: a dataset URL (optionally url-escaped) ``https://host/[prefix/]dataset/<id>``,
  optionally pinned with ``?activity_id=<id>`` or ``/history/<id>``; resolved ref =
  ``<dataset>.v<epoch of metadata_modified>``.

Dataverse and CKAN hosts are arbitrary: they pass the same host rules as git URLs, and
every redirect is checked (``apps.repos.http``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from apps.repos.errors import (
    ProviderBadResponse,
    RecordNotFound,
    SpecInvalid,
)
from apps.repos.http import fetch_json, follow_redirects
from apps.repos.providers.base import ParsedSpec, Resolution, get_path, provider_url
from apps.repos.types import GitCredential, RecordFile, ResolvedRepo
from apps.repos.validation import check_text, check_url, parse_http_url

_DOI = re.compile(r"^10\.\d{4,9}/[^\s]+$")
_DOI_PREFIXES = (
    "doi:",
    "https://doi.org/",
    "http://doi.org/",
    "https://dx.doi.org/",
    "http://dx.doi.org/",
)
_HEX32 = re.compile(r"([0-9a-f]{32})")


def normalise_doi(text: str) -> str | None:
    """The bare DOI (``10.x/…``) in ``text``, or None when it is not a DOI."""
    value = text.strip()
    lowered = value.lower()
    for prefix in _DOI_PREFIXES:
        if lowered.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = unquote(value)
    if not _DOI.match(value) or any(part in ("", ".", "..") for part in value.split("/")):
        return None
    return value


def _doi_url(doi: str) -> str:
    return f"{provider_url('doi')}/{quote(doi, safe='/:;()._-')}"


def _landing(doi: str, accept: object, what: str) -> str:
    """Follow ``doi`` through doi.org to the first URL ``accept`` takes."""
    landing, status = follow_redirects(_doi_url(doi), accept)  # type: ignore[arg-type]
    if landing is None:
        if status in (404, 410):
            raise RecordNotFound(f"The DOI {doi} does not exist.")
        raise RecordNotFound(f"The DOI {doi} does not point to a {what}.")
    return landing


def _epoch(timestamp: object) -> str:
    """Seconds since the epoch of an ISO timestamp (UTC when it has no zone), as text."""
    if not isinstance(timestamp, str):
        raise ProviderBadResponse("The record has no modification date.")
    text = timestamp.strip().replace("Z", "+00:00")
    text = re.sub(r"\.\d+", "", text)  # fractions of seconds do not version anything
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ProviderBadResponse("The record's modification date is unreadable.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return str(int(parsed.timestamp()))


def _checksum(algorithm: object, value: object) -> str:
    if not isinstance(algorithm, str) or not isinstance(value, str) or not value:
        return ""
    name = algorithm.lower().replace("-", "")
    return f"{name}:{value.lower()}" if name in ("md5", "sha1", "sha256", "sha512") else ""


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


class _RecordProvider:
    name = ""
    label = ""
    uses_credentials = False

    def credential_host(self, parsed: ParsedSpec) -> str:
        return ""

    def _repo(self, parsed: ParsedSpec, **fields: object) -> ResolvedRepo:
        files = fields.pop("files", ())
        return ResolvedRepo(
            provider=self.name,
            spec=parsed.spec,
            kind="record",
            unresolved_ref="",
            files=tuple(files),  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )


class ZenodoProvider(_RecordProvider):
    name = "zenodo"
    label = "Zenodo DOI"

    def _record_id(self, url: str) -> str | None:
        base = urlsplit(provider_url("zenodo"))
        parts = urlsplit(url)
        match = re.match(r"^/records?/(\d+)/?$", parts.path)
        if match and parts.hostname == base.hostname:
            return match.group(1)
        return None

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="Zenodo DOI")
        if spec.isdigit():
            return ParsedSpec(self.name, spec, canonical=spec, values={"record": spec})
        if spec.startswith(("https://", "http://")) and (record := self._record_id(spec)):
            return ParsedSpec(self.name, spec, canonical=record, values={"record": record})
        doi = normalise_doi(spec)
        if doi is None:
            raise SpecInvalid(
                f'"{spec}" is not a Zenodo DOI such as 10.5281/zenodo.3242074 or a record id.'
            )
        return ParsedSpec(self.name, spec, canonical=doi, values={"doi": doi})

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        record_id = parsed.values.get("record")
        if record_id is None:
            landing = _landing(
                parsed.values["doi"], lambda url: self._record_id(url) is not None, "Zenodo record"
            )
            record_id = self._record_id(landing)
        base = provider_url("zenodo")
        not_found = RecordNotFound(f"There is no Zenodo record {record_id}.")
        record = fetch_json(f"{base}/api/records/{record_id}", not_found=not_found)
        links = record.get("links") or {}
        if links.get("files"):
            entries = get_path(fetch_json(str(links["files"]), not_found=not_found), "entries")
        else:  # the legacy serialisation lists the files inline
            entries = record.get("files") or []
        files = []
        for entry in entries:
            entry_links = entry.get("links") or {}
            files.append(
                RecordFile(
                    url=str(entry_links.get("content") or get_path(entry_links, "self")),
                    path=str(get_path(entry, "key")),
                    size=_size(entry.get("size")),
                    checksum=str(entry.get("checksum") or ""),
                )
            )
        version_doi = str(record.get("doi") or f"10.5281/zenodo.{record_id}")
        repo = self._repo(
            parsed,
            repo_url=str(links.get("self_html") or f"{base}/records/{record_id}"),
            resolved_ref=str(get_path(record, "id")),
            persistent_spec=f"zenodo/{version_doi}",
            ref_url=_doi_url(version_doi),
            host=parse_http_url(base, allow_query=True).hostport,
            display_name=f"zenodo {version_doi}",
            files=files,
        )
        return Resolution(repo=repo)


class FigshareProvider(_RecordProvider):
    name = "figshare"
    label = "Figshare DOI"
    _ARTICLE_URL = re.compile(r"^/articles/(?:[^/]+/)?[^/]+/(\d+)(?:/(\d+))?/?$")
    _FIGSHARE_DOI = re.compile(r"^10\.6084/m9\.figshare\.(\d+)(?:\.v(\d+))?$")

    def _article(self, url: str) -> tuple[str, str] | None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        match = self._ARTICLE_URL.match(parts.path)
        if match and (host == "figshare.com" or host.endswith(".figshare.com")):
            return match.group(1), match.group(2) or "1"
        return None

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="Figshare DOI")
        if spec.startswith(("https://", "http://")) and (article := self._article(spec)):
            article_id, version = article
            return ParsedSpec(
                self.name,
                spec,
                canonical=f"10.6084/m9.figshare.{article_id}.v{version}",
                values={"article": article_id, "version": version},
            )
        doi = normalise_doi(spec)
        if doi is None:
            raise SpecInvalid(
                f'"{spec}" is not a Figshare DOI such as 10.6084/m9.figshare.9782777.v1.'
            )
        match = self._FIGSHARE_DOI.match(doi)
        if match:
            return ParsedSpec(
                self.name,
                spec,
                canonical=doi,
                values={"article": match.group(1), "version": match.group(2) or "1"},
            )
        return ParsedSpec(self.name, spec, canonical=doi, values={"doi": doi})

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        article_id = parsed.values.get("article")
        version = parsed.values.get("version", "1")
        if article_id is None:
            landing = _landing(
                parsed.values["doi"], lambda url: self._article(url) is not None, "Figshare item"
            )
            article_id, version = self._article(landing) or ("", "")
        api = provider_url("figshare")
        article = fetch_json(
            f"{api}/articles/{article_id}/versions/{version}",
            not_found=RecordNotFound(
                f"There is no Figshare item {article_id} in version {version}."
            ),
        )
        files = []
        for entry in get_path(article, "files") or []:
            if entry.get("is_link_only"):
                continue
            files.append(
                RecordFile(
                    url=str(get_path(entry, "download_url")),
                    path=str(get_path(entry, "name")),
                    size=_size(entry.get("size")),
                    checksum=_checksum("md5", entry.get("computed_md5")),
                )
            )
        version_doi = str(article.get("doi") or f"10.6084/m9.figshare.{article_id}.v{version}")
        repo = self._repo(
            parsed,
            repo_url=str(article.get("url_public_html") or article.get("figshare_url") or ""),
            resolved_ref=f"{article_id}.v{version}",
            persistent_spec=f"figshare/{version_doi}",
            ref_url=_doi_url(version_doi),
            host=parse_http_url(api, allow_query=True).hostport,
            display_name=f"figshare {version_doi}",
            files=files,
        )
        return Resolution(repo=repo)


class DataverseProvider(_RecordProvider):
    name = "dataverse"
    label = "Dataverse DOI"
    _LANDING_PATHS = ("/citation", "/dataset.xhtml", "/file.xhtml")

    def _landing_pid(self, url: str) -> str | None:
        parts = urlsplit(url)
        pids = parse_qs(parts.query).get("persistentId")
        if parts.path in self._LANDING_PATHS and pids:
            return pids[0]
        return None

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="Dataverse DOI")
        if spec.startswith(("https://", "http://")) and not normalise_doi(spec):
            url = parse_http_url(spec, what="Dataverse dataset URL", allow_query=True)
            pid = self._landing_pid(url.url)
            if pid is None or normalise_doi(pid) is None:
                raise SpecInvalid(
                    "A Dataverse URL looks like https://host/dataset.xhtml?persistentId=doi:…"
                )
            base = f"{url.scheme}://{url.hostport}"
            return ParsedSpec(
                self.name,
                spec,
                canonical=str(normalise_doi(pid)),
                values={"pid": pid, "base": base},
            )
        doi = normalise_doi(spec)
        if doi is None:
            raise SpecInvalid(f'"{spec}" is not a DOI such as 10.7910/DVN/TJCLKP.')
        return ParsedSpec(self.name, spec, canonical=doi, values={"doi": doi})

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        if "base" in parsed.values:
            base, pid = parsed.values["base"], parsed.values["pid"]
        else:
            doi = parsed.values["doi"]
            landing = _landing(
                doi, lambda url: self._landing_pid(url) is not None, "Dataverse dataset"
            )
            url, _check = check_url(landing, what="Dataverse URL", allow_query=True)
            base = f"{url.scheme}://{url.hostport}"
            pid = self._landing_pid(landing) or f"doi:{doi}"
            if urlsplit(landing).path == "/file.xhtml":  # a file's DOI: its dataset's is shorter
                pid = pid.rsplit("/", 1)[0]
        answer = fetch_json(
            f"{base}/api/datasets/:persistentId?{urlencode({'persistentId': pid})}",
            not_found=RecordNotFound(f"There is no published Dataverse dataset {pid}."),
        )
        if answer.get("status") != "OK":
            raise RecordNotFound(f"There is no published Dataverse dataset {pid}.")
        data = get_path(answer, "data")
        latest = get_path(data, "latestVersion")
        files = []
        for entry in get_path(latest, "files") or []:
            if entry.get("restricted"):
                continue  # needs an account on the installation; not downloadable here
            datafile = get_path(entry, "dataFile")
            original = bool(datafile.get("originalFileFormat"))
            name = datafile.get("originalFileName") if original else None
            name = name or get_path(entry, "label")
            folder = entry.get("directoryLabel") or ""
            checksum = datafile.get("checksum") or {}
            files.append(
                RecordFile(
                    url=f"{base}/api/access/datafile/{get_path(datafile, 'id')}"
                    + ("?format=original" if original else ""),
                    path=f"{folder}/{name}" if folder else str(name),
                    size=None if original else _size(datafile.get("filesize")),
                    checksum=_checksum(checksum.get("type"), checksum.get("value")),
                )
            )
        authority, identifier = get_path(data, "authority"), get_path(data, "identifier")
        dataset_doi = f"{authority}/{identifier}"
        repo = self._repo(
            parsed,
            repo_url=f"{base}/dataset.xhtml?{urlencode({'persistentId': pid})}",
            resolved_ref=(
                f"{get_path(data, 'id')}.v{get_path(latest, 'versionNumber')}"
                f".{get_path(latest, 'versionMinorNumber')}"
            ),
            persistent_spec=f"dataverse/{dataset_doi}",
            ref_url=str(data.get("persistentUrl") or _doi_url(dataset_doi)),
            host=parse_http_url(base, allow_query=True).hostport,
            display_name=f"dataverse {dataset_doi}",
            files=files,
        )
        return Resolution(repo=repo)


class HydroShareProvider(_RecordProvider):
    name = "hydroshare"
    label = "HydroShare resource"
    MAX_PAGES = 100

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="HydroShare resource")
        match = _HEX32.search(spec)
        if match is None:
            raise SpecInvalid("The HydroShare resource id (32 hexadecimal characters) is missing.")
        return ParsedSpec(self.name, spec, canonical=match.group(1), values={"id": match.group(1)})

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        resource_id = parsed.values["id"]
        base = provider_url("hydroshare")
        not_found = RecordNotFound(f"There is no public HydroShare resource {resource_id}.")
        meta = fetch_json(
            f"{base}/hsapi/resource/{resource_id}/scimeta/elements", not_found=not_found
        )
        modified = next(
            (d.get("start_date") for d in meta.get("dates", []) if d.get("type") == "modified"),
            None,
        )
        files = []
        page_url: object = f"{base}/hsapi/resource/{resource_id}/files/"
        for _ in range(self.MAX_PAGES):
            if not isinstance(page_url, str) or not page_url:
                break
            page = fetch_json(page_url, not_found=not_found)
            for entry in get_path(page, "results") or []:
                url = str(get_path(entry, "url"))
                _, marker, tail = url.partition("/data/contents/")
                path = unquote(tail) if marker else str(entry.get("file_name") or "")
                files.append(RecordFile(url=url, path=path, size=_size(entry.get("size"))))
            page_url = page.get("next")
        resource_url = f"{base}/resource/{resource_id}"
        repo = self._repo(
            parsed,
            repo_url=resource_url,
            resolved_ref=f"{resource_id}.v{_epoch(modified)}",
            persistent_spec=f"hydroshare/{resource_url}",
            ref_url=resource_url,
            host=parse_http_url(base, allow_query=True).hostport,
            display_name=f"hydroshare {resource_id}",
            files=files,
        )
        return Resolution(repo=repo)


class CkanProvider(_RecordProvider):
    name = "ckan"
    label = "CKAN dataset"
    _ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="CKAN dataset URL")
        text = unquote(spec) if re.match(r"^https?%3a", spec, re.IGNORECASE) else spec
        url = parse_http_url(text, what="CKAN dataset URL", allow_query=True)
        before, history, activity = url.path.partition("/history/")
        segments = before.rstrip("/").split("/")
        if len(segments) < 3 or segments[-2] != "dataset":
            raise SpecInvalid("A CKAN dataset URL looks like https://host/dataset/<name>.")
        dataset = segments[-1]
        if not history:
            activity = (parse_qs(url.query).get("activity_id") or [""])[0]
        if not self._ID.match(dataset) or (activity and not self._ID.match(activity)):
            raise SpecInvalid("That CKAN dataset or activity id is not valid.")
        prefix = "/".join(segments[:-2])
        pinned = f"{url.scheme}://{url.hostport}{prefix}/dataset/{dataset}"
        if activity:
            pinned += f"?{urlencode({'activity_id': activity})}"
        return ParsedSpec(
            self.name,
            spec,
            canonical=pinned,
            values={
                "api": f"{url.scheme}://{url.hostport}{prefix}/api/3/action/",
                "dataset": dataset,
                "activity": activity,
                "url": pinned,
            },
        )

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        api, dataset = parsed.values["api"], parsed.values["dataset"]
        activity = parsed.values["activity"]
        not_found = RecordNotFound(f"There is no public CKAN dataset {dataset}.")
        if activity:
            query = urlencode({"id": activity, "include_data": "true"})
            answer = fetch_json(f"{api}activity_show?{query}", not_found=not_found)
            package = get_path(answer, "result", "data", "package")
        else:
            answer = fetch_json(
                f"{api}package_show?{urlencode({'id': dataset})}", not_found=not_found
            )
            package = get_path(answer, "result")
        if not answer.get("success"):
            raise not_found
        files: list[RecordFile] = []
        used: set[str] = set()
        for resource in get_path(package, "resources") or []:
            url = str(get_path(resource, "url"))
            name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or str(get_path(resource, "id"))
            if name in used:
                name = f"{get_path(resource, 'id')}-{name}"
            used.add(name)
            files.append(RecordFile(url=url, path=name, size=_size(resource.get("size"))))
        url = parsed.values["url"]
        repo = self._repo(
            parsed,
            repo_url=url,
            resolved_ref=f"{dataset}.v{_epoch(get_path(package, 'metadata_modified'))}",
            persistent_spec=f"ckan/{url}",
            ref_url=url,
            host=parse_http_url(url, allow_query=True).hostport,
            display_name=f"ckan {dataset}",
            files=files,
        )
        return Resolution(repo=repo)
