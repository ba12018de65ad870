"""What the portal asks the kubernetes backend's hub to run for one session: the signed payload.

Pure (no JupyterHub, no Django): the worker builds and signs it
(:class:`~apps.sessions.backends.kubernetes.backend.KubernetesSessions`), the hub's
:class:`~apps.sessions.backends.kubernetes.spawner.BinderyKubeSpawner` verifies and checks it.
The claim-name rule lives here because both sides apply it: the backend names claims with
:func:`claim_name`, the spawner mounts nothing that :data:`CLAIM_NAME` does not match.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from apps.sessions import contract

MIN_MEMORY = 64 * 1024 * 1024
# A claim per volume, named from ids (never names): ``bindery-users-7``, ``bindery-teams-3``.
# A DNS-1123 label of at most 63 characters, as claim and pod volume names must be.
CLAIM_NAME = re.compile(r"bindery-(users|teams)-[1-9][0-9]{0,17}")


def claim_name(kind: str, id_: int) -> str:
    """The claim of a user's (``kind="users"``) or a team's (``"teams"``) volume."""
    name = f"bindery-{kind}-{id_}"
    if CLAIM_NAME.fullmatch(name) is None:
        raise ValueError(f"no claim name for {kind} {id_!r}")
    return name


@dataclass(frozen=True)
class KubeLaunchOptions:
    """One session's server, for the kubernetes backend.

    ``image`` is the build's image (``<BINDERY_REGISTRY_PREFIX><slug>:<key>``). ``volumes``
    are ``(claim_name, mount)`` with ``mount`` relative to the image's home (repo2docker's
    ``REPO_DIR``, ``/home/jovyan``): ``persistent`` (the user's volume) or
    ``persistent/teams/<slug>``, the same layout as the local backend's working copy.
    ``memory_bytes`` is the limit the quota admitted; ``cpu`` a CPU limit in cores, or None
    for none. The ``binder_*`` values are the mybinder environment variables
    (``contract.BINDER_ENV``). ``hub_user``/``server_name`` bind the signature to one server.
    """

    hub_user: str
    server_name: str
    image: str
    volumes: tuple[tuple[str, str], ...] = ()
    memory_bytes: int = 2 * 1024**3
    cpu: float | None = None
    default_url: str = ""
    binder_repo_url: str = ""
    binder_ref_url: str = ""
    binder_launch_host: str = ""
    binder_request: str = ""
    binder_persistent_request: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["volumes"] = [list(v) for v in self.volumes]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> KubeLaunchOptions:
        """Type-check a verified payload; raises InvalidLaunchOptions. (What the values may
        be, such as the image's registry and the claims' names, the spawner checks.)"""
        data = contract.check_fields(
            data, set(cls.__dataclass_fields__), ("hub_user", "server_name", "image")
        )
        contract.check_strings(data, ("default_url", *contract.BINDER_ENV))
        contract.check_int(data, "memory_bytes", cls.memory_bytes, MIN_MEMORY)
        contract.check_cpu(data)
        return cls(**{**data, "volumes": contract.check_pairs(data, "volumes")})

    def binder_env(self) -> dict[str, str]:
        """``BINDER_*`` → value, for the values that are set (as mybinder sets them)."""
        values = {name.upper(): getattr(self, name) for name in contract.BINDER_ENV}
        return {name: value for name, value in values.items() if value}
