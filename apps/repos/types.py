"""Plain data passed between repos, builds and sessions (no Django models: backends and the
hub-side spawner use them without a database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class GitCredential:
    """A secret for one git host, handed to git through GIT_ASKPASS, never in argv or URLs."""

    host: str  # "host" or "host:port", lower case
    token: str = field(repr=False)
    username: str = "x-access-token"

    def __repr__(self) -> str:  # never print the token, even by accident
        return f"GitCredential(host={self.host!r}, username={self.username!r}, token=***)"


@dataclass(frozen=True)
class RecordFile:
    """One downloadable file of a DOI/record (Zenodo, Figshare, Dataverse...)."""

    url: str
    path: str  # relative path in the checkout
    size: int | None = None
    checksum: str = ""  # "md5:..." / "sha256:..." when the record gives one


@dataclass(frozen=True)
class ResolvedRepo:
    """A repository spec resolved to an immutable version.

    ``persistent_spec`` is ``provider/spec`` with the ref pinned (what mybinder puts after
    ``/v2/`` in BINDER_PERSISTENT_REQUEST); ``kind`` says how to fetch it.
    """

    provider: str  # "gh", "gl", "gist", "git", "zenodo", "figshare", "dataverse", ...
    spec: str  # the spec as given, without the provider prefix
    kind: Literal["git", "record", "swh"]
    repo_url: str  # clone URL for git; landing page of the record otherwise
    unresolved_ref: str
    resolved_ref: str  # 40-hex commit sha, or the record's version id
    persistent_spec: str
    ref_url: str  # web page of the resolved version (BINDER_REF_URL)
    host: str  # "host[:port]" the content comes from
    display_name: str  # "org/repo", "zenodo 10.5281/zenodo.123"...
    files: tuple[RecordFile, ...] = ()  # record providers only
    archive_url: str = ""  # swhid and archive-style records
    # The stored credential (repos.Credential id) that could read a private repository;
    # None for a public one. Builds of a private repo are visible only to people who may use
    # this credential (repos.selectors.can_use_credential).
    credential_id: int | None = None

    @property
    def is_private(self) -> bool:
        return self.credential_id is not None

    @property
    def slug(self) -> str:
        """A short filesystem- and DNS-safe name derived from the repository."""
        import hashlib
        import re

        base = re.sub(r"[^a-z0-9]+", "-", self.display_name.lower()).strip("-")[:40] or "repo"
        digest = hashlib.sha256(f"{self.provider}:{self.repo_url}".encode()).hexdigest()[:8]
        return f"{base}-{digest}"
