"""The session backend interface: where a session's server runs and where volumes live.

The builder's seam (``apps.builds.backends.base``) turns a repository into an environment;
this one turns an environment into a running server and keeps the volumes it mounts. The
services (``apps.sessions.services``) decide *what* runs — which environment, which
volumes, which limits, the mybinder variables — as a :class:`ServerSpec`; the backend
decides *how*: the signed ``user_options`` the hub gets, the spawner the hub runs, where a
volume's bytes live and how they are measured, archived and deleted, and what is left to
release when a server is gone. Services never know which backend is in use.

Backends take plain dataclasses, not models, so they test without a database. They raise
``portal.errors.BinderyError`` subclasses for what a person should see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from portal.errors import BinderyError


@dataclass(frozen=True)
class VolumeRef:
    """One volume as the backend sees it: ``key`` is derived from ids (``users/7``,
    ``teams/3``), never from names; ``team_id`` is set for a team's volume."""

    key: str
    user_id: int | None = None
    team_id: int | None = None
    # What the volume may hold (its storage quota), where the backend can enforce it: a
    # new claim requests this size (kubernetes); a directory cannot (local: measured and
    # refused at admission instead).
    limit_bytes: int | None = None

    @property
    def is_team(self) -> bool:
        return self.team_id is not None


@dataclass(frozen=True)
class Mount:
    """A volume mounted at ``path``, relative to the server's working directory:
    ``persistent`` (the user's volume) or ``persistent/teams/<slug>``."""

    volume: VolumeRef
    path: str


@dataclass(frozen=True)
class ServerSpec:
    """What one session's server runs, with which limits and volumes (backend-neutral).

    ``environment`` is the build's ``environment_path`` (local: the virtualenv; kubernetes:
    the image), ``checkout`` its checkout (local only; an image holds its repository).
    ``owner_user_id``/``anonymous_owner`` and ``team_id`` say whose server it is (the local
    backend maps them to sandbox uids and groups). ``binder`` holds the mybinder variables
    (``binder_repo_url``, ``binder_ref_url``, ``binder_launch_host``, ``binder_request``,
    ``binder_persistent_request``).
    """

    session_id: int
    hub_user: str
    server_name: str
    environment: str
    checkout: str = ""
    start_script: str = ""
    mounts: tuple[Mount, ...] = ()
    memory_bytes: int = 2 * 1024**3
    cpu: float | None = None
    max_processes: int = 256
    owner_user_id: int | None = None
    anonymous_owner: str = ""
    team_id: int | None = None
    default_url: str = ""
    binder: tuple[tuple[str, str], ...] = ()


# What a volume's ``size_bytes`` is: the bytes its files use now, or the size its storage
# allows (a claim's capacity: nothing reads a claim's usage without mounting it).
SizeKind = Literal["used", "capacity"]


class ArchiveNotOffered(BinderyError):
    status = 501
    code = "ARCHIVE_NOT_OFFERED"
    default_message = "Downloading a volume is not offered on this installation."


class SessionBackend(Protocol):
    """Runs sessions' servers (through the hub) and keeps their volumes.

    Every method is safe to call twice: ``ensure_volume`` of an existing volume, ``release``
    of a released server and ``delete_volume`` of a deleted one do nothing.
    """

    name: str
    # Whether archive_volume gives a .tar.gz (else it raises ArchiveNotOffered), and what
    # measure_volume returns: pages and the API say so rather than offer what fails.
    archive_offered: bool
    size_kind: SizeKind

    def hub_config(self) -> dict[str, dict[str, Any]]:
        """The hub's spawner configuration, ``{section: {trait: value}}`` (plain literals):
        ``JupyterHub.spawner_class`` and the spawner's own traits."""
        ...

    def launch_options(self, spec: ServerSpec) -> dict[str, Any]:
        """The signed ``user_options`` for starting ``spec``'s server on the hub."""
        ...

    def release(self, session_id: int, server_name: str) -> None:
        """Remove what a stopped or failed server leaves behind (never a volume)."""
        ...

    def ensure_volume(self, volume: VolumeRef) -> object:
        """Create the volume's storage if it does not exist yet (what it returns is the
        backend's own handle: a directory, a claim's name)."""
        ...

    def measure_volume(self, volume: VolumeRef) -> int:
        """The volume's size in bytes, as ``size_kind`` says: what its files use now, or
        what its storage allows (0 when it has no storage yet)."""
        ...

    def used_bytes(self, volume: VolumeRef) -> int | None:
        """The bytes the volume's files use now, for the usage ledger and its storage quota;
        None where the backend cannot read them (a claim's usage is not readable without
        mounting it)."""
        ...

    def archive_volume(self, volume: VolumeRef, name: str) -> Iterator[bytes]:
        """The volume's files as a .tar.gz stream whose entries are under ``name/``; raises
        ArchiveNotOffered where the backend cannot read volumes."""
        ...

    def delete_volume(self, volume: VolumeRef) -> None:
        """Delete the volume's storage and everything in it."""
        ...

    def memory_used(self, hub_user: str, server_name: str) -> int | None:
        """Bytes of memory the running server uses now, or None when unknown."""
        ...
