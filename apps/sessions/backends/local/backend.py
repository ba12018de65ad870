"""The local backend's portal side: signed launch options with host paths and sandbox uids,
volumes as directories under ``BINDERY_VOLUMES_DIR``, working copies under
``BINDERY_SESSIONS_DIR``, and the hub configured to run ``BinderySpawner``."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps import cgroups
from apps.sandbox import Ids
from apps.sessions.backends.base import ServerSpec, SessionBackend, SizeKind, VolumeRef
from apps.sessions.backends.local import volumefs
from apps.sessions.backends.local.archive import stream_tar_gz
from apps.sessions.backends.local.options import LaunchOptions
from apps.sessions.contract import sign_user_options, signing_key
from portal import sandbox_network

SPAWNER = "apps.sessions.backends.local.spawner.BinderySpawner"


class LocalSessions:
    name = "local"
    archive_offered = True
    size_kind: SizeKind = "used"  # the bytes of its regular files

    # -- the hub ------------------------------------------------------------------------------

    @staticmethod
    def cgroup_parent() -> str:
        """The cgroup (under each controller) that holds this installation's servers."""
        hub_dir = Path(settings.BINDERY_HUB_DIR).resolve()
        return f"bindery-{hashlib.sha256(str(hub_dir).encode()).hexdigest()[:8]}"

    def hub_config(self) -> dict[str, dict[str, Any]]:
        roots = {
            "envs_dir": settings.BINDERY_ENVS_DIR,
            "checkouts_dir": settings.BINDERY_CHECKOUTS_DIR,
            "sessions_dir": settings.BINDERY_SESSIONS_DIR,
            "volumes_dir": settings.BINDERY_VOLUMES_DIR,
        }
        return {
            "JupyterHub": {"spawner_class": SPAWNER},
            "LocalProcessSpawner": {"interrupt_timeout": 10, "term_timeout": 5},
            "BinderySpawner": {
                "signing_key_hex": signing_key(settings.BINDERY_HUB_TOKEN).hex(),
                **{name: str(Path(path).resolve()) for name, path in roots.items()},
                "sandbox": settings.BINDERY_SANDBOX,
                # auto: a network namespace of its own per session (bubblewrap + pasta) when
                # possible, else the host's network with a warning; isolated: required; shared.
                "network": getattr(settings, "BINDERY_SESSION_NETWORK", "auto"),
                # apps.sandbox: servers run as their user's uid, seeing only what they need
                "uid_base": settings.BINDERY_SANDBOX_UID_BASE,
                # server starts at once (CPU-bound); the rest wait their turn
                "starts_at_once": settings.BINDERY_SERVER_STARTS_AT_ONCE,
                "lean_start": settings.BINDERY_SERVER_LEAN_START,
                "cgroup_parent": self.cgroup_parent(),
                # Sessions' network policy (apps.netns.prohibit_host_networks): blocked
                # ranges, the database's and Redis's hosts resolved now, what the operator
                # allows.
                "blocked_networks": sandbox_network.blocked_networks(),
                "allowed_networks": sandbox_network.allowed_networks(),
            },
        }

    # -- servers -------------------------------------------------------------------------------

    def workdir(self, server_name: str) -> Path:
        return Path(settings.BINDERY_SESSIONS_DIR) / server_name

    def launch_options(self, spec: ServerSpec) -> dict[str, Any]:
        ids = Ids(settings.BINDERY_SANDBOX_UID_BASE)
        # the session's own host uid in the sandbox: its user's, or its anonymous owner's
        uid = (
            ids.user(spec.owner_user_id)
            if spec.owner_user_id is not None
            else ids.anonymous(spec.anonymous_owner)
        )
        binder = dict(spec.binder)
        volumes = []
        for mount in spec.mounts:
            self.ensure_volume(mount.volume)
            volumes.append((str(self.volume_dir(mount.volume)), mount.path))
        options = LaunchOptions(
            uid=uid,
            gid=uid,
            team_gid=ids.team(spec.team_id) if spec.team_id is not None else 0,
            hub_user=spec.hub_user,
            server_name=spec.server_name,
            env_path=spec.environment,
            checkout_path=spec.checkout,
            workdir=str(self.workdir(spec.server_name)),
            volumes=tuple(volumes),
            memory_bytes=spec.memory_bytes,
            max_processes=spec.max_processes,
            start_script=spec.start_script,
            default_url=spec.default_url,
            cpu=spec.cpu,
            binder_repo_url=binder.get("binder_repo_url", ""),
            binder_ref_url=binder.get("binder_ref_url", ""),
            binder_launch_host=binder.get("binder_launch_host", ""),
            binder_request=binder.get("binder_request", ""),
            binder_persistent_request=binder.get("binder_persistent_request", ""),
        )
        return sign_user_options(options.to_dict(), signing_key(settings.BINDERY_HUB_TOKEN))

    def release(self, session_id: int, server_name: str) -> None:
        """The working copy goes (the spawner made it; its files are the session uid's, the
        directory root's, so removing it follows no link the session planted: rmtree does
        not follow symlinks)."""
        shutil.rmtree(self.workdir(server_name), ignore_errors=True)

    def memory_used(self, hub_user: str, server_name: str) -> int | None:
        """The cgroup's working set (``apps.cgroups.memory_in_use``), found from ids as the
        spawner named it (``safe_name(hub user, server name)`` under :meth:`cgroup_parent`):
        two small file reads. None without a memory cgroup (the limit is then RLIMIT_AS per
        process) or for a hub on another machine."""
        try:
            name = cgroups.safe_name(hub_user, server_name)
            return cgroups.memory_in_use(name, parent=self.cgroup_parent())
        except ValueError:  # not a name the spawner could have made
            return None

    # -- volumes -------------------------------------------------------------------------------

    def volume_dir(self, volume: VolumeRef) -> Path:
        return Path(settings.BINDERY_VOLUMES_DIR) / volume.key

    def ensure_volume(self, volume: VolumeRef) -> Path:
        """The volume's directory, made if missing."""
        path = self.volume_dir(volume)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def measure_volume(self, volume: VolumeRef) -> int:
        """Bytes of the volume's regular files, walked by descriptor so that a symlink a
        session plants (even mid-walk) is neither followed nor counted."""
        return volumefs.measure(self.volume_dir(volume))

    def used_bytes(self, volume: VolumeRef) -> int | None:
        return self.measure_volume(volume)

    def archive_volume(self, volume: VolumeRef, name: str) -> Iterator[bytes]:
        self.ensure_volume(volume)
        return stream_tar_gz(self.volume_dir(volume), name)

    def delete_volume(self, volume: VolumeRef) -> None:
        shutil.rmtree(self.volume_dir(volume), ignore_errors=True)


if TYPE_CHECKING:
    _checked: SessionBackend = LocalSessions()  # mypy: the class keeps the protocol
