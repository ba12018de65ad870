"""What a person pastes into a launch form → (provider, spec), as mybinder's form does.

Recognised, in this order:

- a Software Heritage id (``swh:1:…``) → ``swhid``;
- a DOI (``10.x/…``, ``doi:…``, ``https://doi.org/…``) → ``zenodo`` (10.5281/zenodo.*),
  ``figshare`` (10.6084/*), ``hydroshare`` (10.4211/hs.*), otherwise ``dataverse`` (the
  one DOI provider with many installations and DOI prefixes);
- ``owner/repo`` → ``gh``;
- URLs: GitHub (``/tree/<ref>``, ``/blob/<ref>/…``), gists, GitLab (``/-/tree/<ref>``), Zenodo
  and Figshare record pages, HydroShare resources, Software Heritage pages, Dataverse
  dataset pages, CKAN ``/dataset/<id>`` pages, mybinder-style ``/v2/<provider>/<spec>``
  links; any other http(s) URL → ``git``.

An explicit ``ref`` wins over one in the URL; without either, git providers use ``HEAD``.
Nothing here touches the network; ``services.resolve`` does every other check.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

from django.conf import settings

from apps.repos.errors import InputUnrecognised
from apps.repos.providers.records import normalise_doi
from apps.repos.validation import (
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    HttpUrl,
    check_text,
    parse_http_url,
    refuse_non_http,
)

_SHORTHAND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_BINDER_HOSTS = {"mybinder.org", "gke.mybinder.org", "ovh.mybinder.org", "gesis.mybinder.org"}


def _hosts(provider: str, *defaults: str) -> set[str]:
    hosts = set(defaults)
    base = settings.BINDERY_PROVIDER_URLS.get(provider)
    if base:
        # A broken operator URL simply matches nothing.
        with contextlib.suppress(Exception):
            hosts.add(parse_http_url(base, what="provider URL", allow_query=True).hostport)
    return hosts


def provider_for_doi(doi: str) -> str:
    lowered = doi.lower()
    if lowered.startswith("10.5281/zenodo."):
        return "zenodo"
    if lowered.startswith("10.6084/"):
        return "figshare"
    if lowered.startswith("10.4211/hs."):
        return "hydroshare"
    return "dataverse"


def _git_ref(ref: str, from_url: str = "") -> str:
    return ref or from_url or "HEAD"


def parse_repo_input(text: str, ref: str = "") -> tuple[str, str]:
    """(provider, spec) for a pasted repository, DOI or record. Raises the input errors of
    ``apps.repos.validation`` (local paths, ssh, ``file://``, user info...) or
    InputUnrecognised."""
    text = check_text(text, what="repository", max_length=MAX_URL_LENGTH).strip()
    ref = check_text(ref, what="git ref", max_length=MAX_REF_LENGTH).strip()
    if not text:
        raise InputUnrecognised("Paste a repository URL, a DOI or a record URL.")
    if text.startswith("swh:"):
        return "swhid", text
    doi = normalise_doi(text)
    if doi is not None:
        provider = provider_for_doi(doi)
        return provider, doi
    if not re.match(r"^https?://", text, re.IGNORECASE):
        if _SHORTHAND.match(text) and ".." not in text.split("/"):
            owner, repo = text.split("/")
            repo = repo.removesuffix(".git")
            return "gh", f"{owner}/{repo}/{_git_ref(ref)}"
        refuse_non_http(text)
    url = parse_http_url(text, allow_query=True)
    return _from_url(url, ref)


def _segments(url: HttpUrl) -> list[str]:
    return [unquote(s) for s in url.path.split("/") if s]


def _from_url(url: HttpUrl, ref: str) -> tuple[str, str]:
    host = url.hostport
    parts = _segments(url)
    if host in _hosts("gh", "github.com", "www.github.com"):
        if len(parts) < 2:
            raise InputUnrecognised("That GitHub URL is not a repository: use .../<owner>/<repo>.")
        owner, repo = parts[0], parts[1].removesuffix(".git")
        url_ref = parts[3] if len(parts) >= 4 and parts[2] in ("tree", "blob", "commit") else ""
        return "gh", f"{owner}/{repo}/{_git_ref(ref, url_ref)}"
    if host in _hosts("gist", "gist.github.com"):
        if len(parts) in (2, 3):
            spec = f"{parts[0]}/{parts[1].removesuffix('.git')}"
            gist_ref = ref or (parts[2] if len(parts) == 3 else "")
            return "gist", f"{spec}/{gist_ref}" if gist_ref else spec
        raise InputUnrecognised("A gist URL looks like https://gist.github.com/<user>/<id>.")
    if host in _hosts("gl", "gitlab.com", "www.gitlab.com"):
        url_ref = ""
        if "-" in parts:
            dash = parts.index("-")
            rest = parts[dash + 1 :]
            if len(rest) >= 2 and rest[0] in ("tree", "blob", "commit"):
                url_ref = rest[1]
            parts = parts[:dash]
        if len(parts) < 2:
            raise InputUnrecognised("That GitLab URL is not a project: use .../<group>/<project>.")
        namespace = "/".join(parts).removesuffix(".git")
        return "gl", f"{quote(namespace, safe='')}/{quote(_git_ref(ref, url_ref), safe='/')}"
    if host in _hosts("zenodo", "zenodo.org"):
        match = re.match(r"^/records?/(\d+)/?$", url.path)
        if match:
            return "zenodo", f"10.5281/zenodo.{match.group(1)}"
        doi = normalise_doi(url.path.removeprefix("/doi/"))
        if url.path.startswith("/doi/") and doi:
            return "zenodo", doi
        raise InputUnrecognised("That Zenodo URL is not a record: use .../records/<id>.")
    if host == "figshare.com" or host.endswith(".figshare.com"):
        match = re.match(r"^/articles/(?:[^/]+/)?[^/]+/(\d+)(?:/(\d+))?/?$", url.path)
        if not match:
            raise InputUnrecognised("That Figshare URL is not an item: use .../articles/…/<id>.")
        if host == "figshare.com":
            return "figshare", f"10.6084/m9.figshare.{match.group(1)}.v{match.group(2) or 1}"
        return "figshare", url.url
    if host in _hosts("hydroshare", "www.hydroshare.org", "hydroshare.org"):
        found = _HEX32.search(url.path)
        if found:
            return "hydroshare", found.group(0)
        raise InputUnrecognised("That HydroShare URL is not a resource: use .../resource/<id>.")
    if host in _hosts("swhid", "archive.softwareheritage.org"):
        found_swhid = re.search(r"swh:1:[a-z]{3}:[0-9a-f]{40}(;[^/?#]*)?", unquote(url.path))
        if found_swhid:
            return "swhid", found_swhid.group(0)
    binder_hosts = _BINDER_HOSTS | {urlsplit(settings.SITE_URL).netloc.lower()}
    if host in binder_hosts:
        match = re.match(r"^/v2/([a-z]+)/(.+?)/?$", url.path)
        if match:
            return match.group(1), match.group(2)
    pids = parse_qs(url.query).get("persistentId")
    if url.path in ("/dataset.xhtml", "/citation") and pids and normalise_doi(pids[0]):
        return "dataverse", str(normalise_doi(pids[0]))
    if re.search(r"/dataset/[^/]+/?$", url.path) or re.search(r"/dataset/[^/]+/history/", url.path):
        return "ckan", url.url
    if url.query:
        raise InputUnrecognised("A git repository URL cannot contain a query ('?').")
    return "git", f"{quote(url.url, safe='')}/{quote(_git_ref(ref), safe='/')}"
