"""Git providers: ``gh``, ``gl``, ``gist`` and ``git``, with BinderHub's spec formats.

- ``gh``: ``<owner>/<repo>/<ref>``; the ref may contain ``/``; a ref is required (BinderHub
  answers ``org/repo`` with "Did you mean org/repo/HEAD?").
- ``gl``: ``<url-escaped namespace>/<ref>``, e.g. ``group%2Fsub%2Frepo/main``.
- ``gist``: ``<user>/<gist id>[/<ref>]``; no ref, ``HEAD``, ``master`` or ``main`` mean the
  latest revision.
- ``git``: ``<url-escaped clone URL>/<ref>``; only http(s) URLs.

Refs resolve with ``git ls-remote`` on any host: a 40-hex sha is used as given (the
repository is still contacted once, to check it can be read and with which credential);
a branch or tag resolves to its commit, annotated tags peeled. Ambiguous names follow
git's own order: an exact ``refs/...`` name, then ``refs/tags/<ref>``, then
``refs/heads/<ref>``. The anonymous attempt comes first, so a public repository never
depends on (or is marked as needing) anyone's credential.

What the anonymous attempt finds is kept for ``BINDERY_REF_CACHE_SECONDS`` (10 s; 0: never):
a room launching the same repository asks the host once, and a push is seen at most that
long after. Only public answers are kept (anyone could have had them); a credential's never.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.cache import cache

from apps.repos.errors import (
    ProviderBadResponse,
    ProviderUnavailable,
    RefNotFound,
    RepoNotFoundOrPrivate,
    RepoRedirected,
    SpecInvalid,
)
from apps.repos.git import run_git
from apps.repos.providers.base import (
    ParsedSpec,
    Resolution,
    check_name,
    provider_url,
    strip_suffix,
)
from apps.repos.types import GitCredential, ResolvedRepo
from apps.repos.validation import (
    HttpUrl,
    check_host,
    check_text,
    git_pin_config,
    is_full_sha,
    parse_http_url,
    validate_ref,
)
from portal.errors import BackendError

log = logging.getLogger(__name__)

_NOT_READABLE = (
    "not found",
    "could not read username",
    "could not read password",
    "authentication failed",
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
    "access denied",
    "not valid: is this a git repository",
)
_UNREACHABLE = (
    "could not resolve host",
    "failed to connect",
    "couldn't connect",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "connection reset",
    "ssl",
    "returned error: 5",
    "returned error: 429",
)


def ls_remote(
    url: HttpUrl, ref: str, credentials: Sequence[GitCredential]
) -> tuple[str, GitCredential | None]:
    """The commit ``ref`` names in the repository at ``url`` and the credential that could
    read it (None: it is public). ``ref`` was validated by ``validate_ref``.

    Runs ``git ls-remote -- <url> <patterns>`` anonymously first, then with each of
    ``credentials`` for the URL's host, pinned to the addresses ``check_host`` validated.
    """
    cached = _cached(url, ref)
    if cached:
        return cached, None
    check = check_host(url)
    config = git_pin_config(url, check)
    if ref == "HEAD" or is_full_sha(ref):
        patterns = ["HEAD"]
    elif ref.startswith("refs/"):
        patterns = [ref, f"{ref}^{{}}"]
    else:
        patterns = [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]
    attempts: list[GitCredential | None] = [None]
    attempts += [c for c in credentials if c.host == url.hostport]
    for credential in attempts:
        try:
            output = run_git(
                [*config, "ls-remote", "--", url.url, *patterns],
                credential=credential,
                timeout=float(settings.BINDERY_GIT_TIMEOUT),
            )
        except BackendError as exc:
            _raise_unless_unreadable(exc, url)
            continue
        sha = ref.lower() if is_full_sha(ref) else _select(output, ref)
        if credential is None:
            _keep(url, ref, sha)
        return sha, credential
    raise RepoNotFoundOrPrivate()


def _cache_key(url: HttpUrl, ref: str) -> str:
    digest = hashlib.sha256(f"{url.url}\0{ref}".encode()).hexdigest()
    return f"git-ref:{digest}"


def _cached(url: HttpUrl, ref: str) -> str:
    if settings.BINDERY_REF_CACHE_SECONDS <= 0:
        return ""
    try:
        found = cache.get(_cache_key(url, ref))
    except Exception:  # the cache is a shortcut: without Redis, ask the host
        log.warning("ref cache unavailable", exc_info=True)
        return ""
    return found if isinstance(found, str) and is_full_sha(found) else ""


def _keep(url: HttpUrl, ref: str, sha: str) -> None:
    if settings.BINDERY_REF_CACHE_SECONDS <= 0:
        return
    try:
        cache.set(_cache_key(url, ref), sha, settings.BINDERY_REF_CACHE_SECONDS)
    except Exception:
        log.warning("ref cache unavailable", exc_info=True)


def _raise_unless_unreadable(exc: BackendError, url: HttpUrl) -> None:
    if exc.code == "GIT_TIMEOUT":
        raise ProviderUnavailable(f"{url.hostname} did not answer in time.") from None
    message = exc.message.lower()
    if any(marker in message for marker in _NOT_READABLE):
        return
    if "returned error: 30" in message or "redirect" in message:
        raise RepoRedirected() from None
    if any(marker in message for marker in _UNREACHABLE):
        raise ProviderUnavailable(f"{url.hostname} could not be reached.") from None
    # git's own last line: it names the URL the user gave and never a secret (credentials
    # are not in URLs or argv).
    raise ProviderBadResponse(exc.message) from None


def _select(output: str, ref: str) -> str:
    refs: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        if is_full_sha(sha):
            refs[name.strip()] = sha.lower()
    if ref == "HEAD":
        candidates = ["HEAD"]
    elif ref.startswith("refs/"):
        candidates = [ref]
    else:
        candidates = [f"refs/tags/{ref}", f"refs/heads/{ref}"]
    for name in candidates:
        found = refs.get(f"{name}^{{}}") or refs.get(name)
        if found:
            return found
    if ref == "HEAD":
        raise RefNotFound("The repository is empty: it has no commits yet.")
    raise RefNotFound(f"There is no branch or tag named {ref!r} in the repository.")


@dataclass(frozen=True)
class _Target:
    url: HttpUrl
    ref: str  # validated; "HEAD" for the default branch
    display_name: str
    persistent_prefix: str  # persistent spec without the sha: "gh/org/repo"
    ref_url_prefix: str  # ref_url without the sha; "" when the host has no commit page


class _GitProvider:
    name = ""
    label = ""
    uses_credentials = True

    def parse(self, spec: str) -> ParsedSpec:
        raise NotImplementedError

    def _target(self, parsed: ParsedSpec) -> _Target:
        raise NotImplementedError

    def credential_host(self, parsed: ParsedSpec) -> str:
        return parse_http_url(parsed.values["url"]).hostport

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        target = self._target(parsed)
        sha, credential = ls_remote(target.url, target.ref, credentials)
        repo = ResolvedRepo(
            provider=self.name,
            spec=parsed.spec,
            kind="git",
            repo_url=target.url.url,
            unresolved_ref=target.ref,
            resolved_ref=sha,
            persistent_spec=f"{target.persistent_prefix}/{sha}",
            ref_url=f"{target.ref_url_prefix}{sha}" if target.ref_url_prefix else target.url.url,
            host=target.url.hostport,
            display_name=target.display_name,
        )
        return Resolution(repo=repo, credential=credential)


class GitHubProvider(_GitProvider):
    name = "gh"
    label = "GitHub"

    def parse(self, spec: str) -> ParsedSpec:
        parts = spec.split("/", 2)
        if len(parts) != 3 or not parts[2]:
            message = f'A GitHub spec has the form "owner/repo/ref"; got "{spec}".'
            if len(parts) == 2 and parts[1] not in ("main", "master", "HEAD"):
                message += f' Did you mean "{spec.rstrip("/")}/HEAD"?'
            raise SpecInvalid(message)
        owner = check_name(parts[0], "GitHub owner")
        repo = check_name(strip_suffix(parts[1], ".git"), "GitHub repository name")
        ref = validate_ref(parts[2])
        url = parse_http_url(f"{provider_url('gh')}/{owner}/{repo}")
        return ParsedSpec(
            self.name,
            spec,
            canonical=f"{owner}/{repo}/{ref}",
            values={"owner": owner, "repo": repo, "ref": ref, "url": url.url},
        )

    def _target(self, parsed: ParsedSpec) -> _Target:
        owner, repo = parsed.values["owner"], parsed.values["repo"]
        return _Target(
            url=parse_http_url(parsed.values["url"]),
            ref=parsed.values["ref"],
            display_name=f"{owner}/{repo}",
            persistent_prefix=f"gh/{owner}/{repo}",
            ref_url_prefix=f"{provider_url('gh')}/{owner}/{repo}/tree/",
        )


class GitLabProvider(_GitProvider):
    name = "gl"
    label = "GitLab"

    def parse(self, spec: str) -> ParsedSpec:
        quoted_namespace, _, quoted_ref = spec.partition("/")
        namespace = check_text(unquote(quoted_namespace), what="GitLab project path")
        ref = unquote(quoted_ref)
        if not ref:
            raise SpecInvalid(
                'A GitLab spec has the form "<url-escaped project path>/<ref>", e.g. '
                '"group%2Fproject/main"; the ref is required.'
            )
        namespace = strip_suffix(namespace, ".git")
        segments = namespace.split("/")
        if len(segments) < 2:
            raise SpecInvalid("A GitLab project path has a group and a project: group/project.")
        for segment in segments:
            check_name(segment, "GitLab group or project name")
        ref = validate_ref(ref)
        url = parse_http_url(f"{provider_url('gl')}/{namespace}.git")
        return ParsedSpec(
            self.name,
            spec,
            canonical=f"{quote(namespace, safe='')}/{ref}",
            values={"namespace": namespace, "ref": ref, "url": url.url},
        )

    def _target(self, parsed: ParsedSpec) -> _Target:
        namespace = parsed.values["namespace"]
        return _Target(
            url=parse_http_url(parsed.values["url"]),
            ref=parsed.values["ref"],
            display_name=namespace,
            persistent_prefix=f"gl/{quote(namespace, safe='')}",
            ref_url_prefix=f"{provider_url('gl')}/{namespace}/tree/",
        )


class GistProvider(_GitProvider):
    name = "gist"
    label = "Gist"
    _LATEST = ("", "HEAD", "master", "main")

    def parse(self, spec: str) -> ParsedSpec:
        parts = spec.split("/")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise SpecInvalid(f'A gist spec has the form "user/gist-id[/ref]"; got "{spec}".')
        user = check_name(parts[0], "GitHub user")
        gist_id = check_name(parts[1], "gist id")
        if not gist_id.isalnum():
            raise SpecInvalid(f"{gist_id!r} is not a gist id.")
        ref = parts[2] if len(parts) == 3 else ""
        ref = "HEAD" if ref in self._LATEST else validate_ref(ref)
        url = parse_http_url(f"{provider_url('gist')}/{user}/{gist_id}.git")
        return ParsedSpec(
            self.name,
            spec,
            canonical=f"{user}/{gist_id}/{ref}",
            values={"user": user, "gist_id": gist_id, "ref": ref, "url": url.url},
        )

    def _target(self, parsed: ParsedSpec) -> _Target:
        user, gist_id = parsed.values["user"], parsed.values["gist_id"]
        return _Target(
            url=parse_http_url(parsed.values["url"]),
            ref=parsed.values["ref"],
            display_name=f"{user}/{gist_id}",
            persistent_prefix=f"gist/{user}/{gist_id}",
            ref_url_prefix=f"{provider_url('gist')}/{user}/{gist_id}/",
        )


class GitUrlProvider(_GitProvider):
    name = "git"
    label = "Git repository"

    def parse(self, spec: str) -> ParsedSpec:
        escaped_url, _, quoted_ref = spec.partition("/")
        url = parse_http_url(unquote(escaped_url))
        ref = unquote(quoted_ref)
        if not ref:
            raise SpecInvalid(
                'A git spec has the form "<url-escaped clone URL>/<ref>", e.g. '
                '"https%3A%2F%2Fgit.example.org%2Frepo.git/main"; the ref is required.'
            )
        ref = validate_ref(ref)
        return ParsedSpec(
            self.name,
            spec,
            canonical=f"{quote(url.url, safe='')}/{ref}",
            values={"ref": ref, "url": url.url},
        )

    def _target(self, parsed: ParsedSpec) -> _Target:
        url = parse_http_url(parsed.values["url"])
        return _Target(
            url=url,
            ref=parsed.values["ref"],
            display_name=f"{url.hostport}{strip_suffix(url.path, '.git')}",
            persistent_prefix=f"git/{quote(url.url, safe='')}",
            # BinderHub: a generic git host has no known page for a commit.
            ref_url_prefix="",
        )
