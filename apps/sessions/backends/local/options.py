"""What the portal asks the local backend's hub to run for one session: the signed payload.

Pure (no JupyterHub, no Django): the worker builds and signs it, the hub's
:class:`~apps.sessions.backends.local.spawner.BinderySpawner` verifies and checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from apps.sessions import contract

MIN_MEMORY = 64 * 1024 * 1024


@dataclass(frozen=True)
class LaunchOptions:
    """One session's server, for the local backend.

    Paths are absolute host paths: ``env_path`` inside BINDERY_ENVS_DIR, ``checkout_path``
    inside BINDERY_CHECKOUTS_DIR, ``workdir`` (the working copy the spawner creates from the
    checkout; the backend's ``release`` deletes it) inside BINDERY_SESSIONS_DIR, each volume's
    host dir inside BINDERY_VOLUMES_DIR. ``volumes`` are ``(host_dir, mount)`` with ``mount``
    relative to the working copy: ``persistent`` (the user's volume) or
    ``persistent/teams/<slug>``. ``start_script`` is relative to the working copy
    (``binder/start``), empty when the repo has none. The ``binder_*`` values are the mybinder
    environment variables, as BinderHub computes them: ``binder_launch_host`` ends with ``/``
    (``https://bindery.example/``), ``binder_request`` and ``binder_persistent_request`` are
    relative (``v2/gh/org/repo/main``, the latter with the resolved commit),
    ``binder_ref_url`` links the resolved commit. ``hub_user``/``server_name`` bind the
    signature to one hub server.
    """

    hub_user: str
    server_name: str
    env_path: str
    checkout_path: str
    workdir: str
    volumes: tuple[tuple[str, str], ...] = ()
    memory_bytes: int = 2 * 1024**3
    max_processes: int = 256
    start_script: str = ""
    binder_repo_url: str = ""
    binder_ref_url: str = ""
    binder_launch_host: str = ""
    binder_request: str = ""
    binder_persistent_request: str = ""
    default_url: str = ""
    cpu: float | None = None
    uid: int = 0
    gid: int = 0
    team_gid: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["volumes"] = [list(v) for v in self.volumes]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> LaunchOptions:
        """Type-check a verified payload; raises InvalidLaunchOptions."""
        required = ("hub_user", "server_name", "env_path", "checkout_path", "workdir")
        data = contract.check_fields(data, set(cls.__dataclass_fields__), required)
        contract.check_strings(data, ("start_script", "default_url", *contract.BINDER_ENV))
        for name, least in (("memory_bytes", MIN_MEMORY), ("max_processes", 8), ("uid", 0),
                            ("gid", 0), ("team_gid", 0)):  # fmt: skip
            contract.check_int(data, name, getattr(cls, name), least)
        contract.check_cpu(data)
        return cls(**{**data, "volumes": contract.check_pairs(data, "volumes")})
