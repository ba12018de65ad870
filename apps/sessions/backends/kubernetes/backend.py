"""The kubernetes backend's portal side: signed launch options naming an image and claims,
volumes as PersistentVolumeClaims in ``BINDERY_K8S_NAMESPACE``, and the hub configured to run
``BinderyKubeSpawner``.

The portal handles claims through the kubernetes client (BINDERY_K8S_KUBECONFIG, else the
pod's service account): the worker creates them (``launch_options``, as a server starts),
web reads and deletes them (the volume pages and API: ``measure_volume``,
``delete_volume``); deploy/base/rbac.yaml grants each exactly that. The hub's KubeSpawner
creates and deletes the pods. Every API call carries ``_request_timeout`` (BINDERY_K8S_API_TIMEOUT).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from apps.builds.backends.kubernetes.cluster import api_client
from apps.sessions.backends.base import (
    ArchiveNotOffered,
    ServerSpec,
    SessionBackend,
    SizeKind,
    VolumeRef,
)
from apps.sessions.backends.kubernetes.options import KubeLaunchOptions, claim_name
from apps.sessions.contract import sign_user_options, signing_key
from portal.errors import ServiceUnavailable
from portal.hubconfig import split_bind

log = logging.getLogger(__name__)
T = TypeVar("T")

SPAWNER = "apps.sessions.backends.kubernetes.spawner.BinderyKubeSpawner"
# The portal stops waiting for a server after services.LAUNCH_TIMEOUT (120 s); a hub that
# waited longer would only start pods nobody waits for. Big images: pre-pull them on nodes.
START_TIMEOUT = 120
LABELS = {"app.kubernetes.io/part-of": "bindery", "app.kubernetes.io/managed-by": "bindery-portal"}


class ClusterUnavailable(ServiceUnavailable):
    """The Kubernetes API did not do what the portal asked (503; details in the log)."""

    code = "K8S_UNAVAILABLE"
    default_message = "The cluster's storage could not be reached; try again in a moment."


def core_api() -> client.CoreV1Api:
    """CoreV1 from BINDERY_K8S_KUBECONFIG, or the pod's service account when it is empty
    (files only: the first request contacts the cluster). Raises ClusterUnavailable."""
    path = settings.BINDERY_K8S_KUBECONFIG
    try:
        return client.CoreV1Api(api_client(str(Path(path).resolve()) if path else ""))
    except (kube_config.ConfigException, OSError, ValueError) as exc:
        log.error("kubernetes client configuration (%s) unusable: %s", path or "in-cluster", exc)
        raise ClusterUnavailable(
            "Bindery's access to the cluster is not configured; an operator must check it.",
            code="K8S_MISCONFIGURED",
        ) from None


class KubernetesSessions:
    name = "kubernetes"
    archive_offered = False  # the portal mounts no claim (see archive_volume)
    size_kind: SizeKind = "capacity"  # the claim's size allowed (see measure_volume)

    # -- the hub ------------------------------------------------------------------------------

    def hub_config(self) -> dict[str, dict[str, Any]]:
        _, api_port = split_bind(settings.BINDERY_HUB_API_BIND)
        api = urlsplit(settings.BINDERY_HUB_API_URL)
        pull_secret = settings.BINDERY_K8S_IMAGE_PULL_SECRET
        return {
            "JupyterHub": {
                "spawner_class": SPAWNER,
                # User pods call the hub's API (activity, OAuth): it listens on the pod's
                # interfaces, not only its loopback. The proxy stays where settings put it.
                "hub_bind_url": f"http://0.0.0.0:{api_port}",
                # A restarted hub finds its servers' pods again (its database is in
                # BINDERY_HUB_DIR, which must persist), instead of stopping every session.
                "cleanup_servers": False,
            },
            "BinderyKubeSpawner": {
                "signing_key_hex": signing_key(settings.BINDERY_HUB_TOKEN).hex(),
                "allowed_image_prefix": settings.BINDERY_REGISTRY_PREFIX,
                "namespace": settings.BINDERY_K8S_NAMESPACE,
                # Where pods reach the hub: the address the portal uses (its Service). Set on
                # the spawner, not JupyterHub.hub_connect_url, so the proxy (in the hub's pod)
                # keeps reaching the hub directly rather than through its own Service.
                "hub_connect_url": f"{api.scheme}://{api.netloc}",
                "image_pull_secrets": [{"name": pull_secret}] if pull_secret else [],
                "image_pull_policy": "IfNotPresent",  # tags are environment keys: immutable
                # JSON settings, their shapes checked by apps/sessions/checks.py (E030)
                "node_selector": dict(
                    cast(dict[str, str], settings.BINDERY_K8S_SESSION_NODE_SELECTOR)
                ),
                "tolerations": list(
                    cast(list[dict[str, Any]], settings.BINDERY_K8S_SESSION_TOLERATIONS)
                ),
                "start_timeout": START_TIMEOUT,
                "k8s_api_request_timeout": max(1, round(settings.BINDERY_K8S_API_TIMEOUT)),
                # repo2docker's images start with its entrypoint (which runs the repository's
                # `start`), then this: the hub's single-user server
                "cmd": ["jupyterhub-singleuser"],
                "extra_labels": {"app.kubernetes.io/part-of": "bindery"},
                # claims are the portal's (ensure_volume, delete_volume), never the hub's
                "storage_pvc_ensure": False,
                "delete_pvc": False,
            },
        }

    # -- servers -------------------------------------------------------------------------------

    def launch_options(self, spec: ServerSpec) -> dict[str, Any]:
        """Signed options for ``spec`` (its environment is the build's image); the claims
        are created first. Raises ClusterUnavailable when they cannot be."""
        volumes = tuple((self.ensure_volume(m.volume), m.path) for m in spec.mounts)
        binder = dict(spec.binder)
        options = KubeLaunchOptions(
            hub_user=spec.hub_user,
            server_name=spec.server_name,
            image=spec.environment,
            volumes=volumes,
            memory_bytes=spec.memory_bytes,
            cpu=spec.cpu,
            default_url=spec.default_url,
            binder_repo_url=binder.get("binder_repo_url", ""),
            binder_ref_url=binder.get("binder_ref_url", ""),
            binder_launch_host=binder.get("binder_launch_host", ""),
            binder_request=binder.get("binder_request", ""),
            binder_persistent_request=binder.get("binder_persistent_request", ""),
        )
        return sign_user_options(options.to_dict(), signing_key(settings.BINDERY_HUB_TOKEN))

    def release(self, session_id: int, server_name: str) -> None:
        """Nothing: the hub's KubeSpawner deletes a stopped server's pod, there is no working
        copy (the image holds the repository), and claims outlive sessions."""

    def memory_used(self, hub_user: str, server_name: str) -> int | None:
        """None: no metrics API (metrics.k8s.io, metrics-server) is assumed, and reading
        it for every row of a list would cost an API call each."""
        return None

    # -- volumes -------------------------------------------------------------------------------

    @staticmethod
    def claim_name(volume: VolumeRef) -> str:
        """``bindery-users-<id>`` or ``bindery-teams-<id>``: from ids, never from names."""
        if volume.team_id is not None:
            return claim_name("teams", volume.team_id)
        if volume.user_id is None:
            raise ValueError(f"volume {volume.key} has neither a user nor a team")
        return claim_name("users", volume.user_id)

    def claim_manifest(self, volume: VolumeRef) -> dict[str, Any]:
        """A user's claim is ReadWriteOnce (BINDERY_K8S_STORAGE_CLASS), a team's
        ReadWriteMany (BINDERY_K8S_TEAM_STORAGE_CLASS): its members' pods run on any node.
        An empty class name leaves the field out, for the cluster's default class."""
        owner = (
            {"bindery.io/team-id": str(volume.team_id)}
            if volume.is_team
            else {"bindery.io/user-id": str(volume.user_id)}
        )
        storage_class = (
            settings.BINDERY_K8S_TEAM_STORAGE_CLASS
            if volume.is_team
            else settings.BINDERY_K8S_STORAGE_CLASS
        )
        spec: dict[str, Any] = {
            "accessModes": ["ReadWriteMany" if volume.is_team else "ReadWriteOnce"],
            "resources": {"requests": {"storage": self.claim_size(volume)}},
        }
        if storage_class:
            spec["storageClassName"] = storage_class
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": self.claim_name(volume),
                "labels": {**LABELS, "app.kubernetes.io/component": "volume", **owner},
            },
            "spec": spec,
        }

    @staticmethod
    def claim_size(volume: VolumeRef) -> str:
        """A new claim requests the volume's storage quota, else BINDERY_K8S_VOLUME_SIZE; an
        existing claim keeps its size (a lower quota is not a shrink: claims only grow)."""
        return str(volume.limit_bytes) if volume.limit_bytes else settings.BINDERY_K8S_VOLUME_SIZE

    def ensure_volume(self, volume: VolumeRef) -> str:
        """The volume's claim name, the claim created if missing (409 AlreadyExists: it is)."""
        name = self.claim_name(volume)
        self._call(
            f"create the claim {name}",
            core_api().create_namespaced_persistent_volume_claim,
            settings.BINDERY_K8S_NAMESPACE,
            self.claim_manifest(volume),
            answers=(409,),
        )
        return name

    def measure_volume(self, volume: VolumeRef) -> int:
        """The claim's size *allowed*, not the bytes used: its bound capacity
        (``status.capacity.storage``), else what it requests; 0 when there is no claim yet.
        Nothing reads a claim's usage without mounting it (or the kubelet's metrics)."""
        name = self.claim_name(volume)
        claim = self._call(
            f"read the claim {name}",
            core_api().read_namespaced_persistent_volume_claim,
            name,
            settings.BINDERY_K8S_NAMESPACE,
            answers=(404,),
        )
        if claim is None:
            return 0
        capacity = (claim.status.capacity if claim.status else None) or {}
        resources = claim.spec.resources if claim.spec else None
        requests = (resources.requests if resources else None) or {}
        size = capacity.get("storage") or requests.get("storage")
        return int(parse_quantity(size)) if size else 0

    def used_bytes(self, volume: VolumeRef) -> int | None:
        """Not readable here: the claim's bytes are inside the pod that mounts it (its
        storage class enforces the size the claim requested: the storage quota)."""
        return None

    def archive_volume(self, volume: VolumeRef, name: str) -> Iterator[bytes]:
        """Not offered: raises ArchiveNotOffered at once (before any response starts)."""
        raise ArchiveNotOffered(
            "Downloading a volume is not offered on this installation: its files live in a "
            "cluster volume the portal does not mount. Open a session and download them "
            "from JupyterLab."
        )

    def delete_volume(self, volume: VolumeRef) -> None:
        """Delete the claim (404: already gone). Its bytes go as the storage class's
        reclaim policy says (usually Delete), once no pod mounts it."""
        name = self.claim_name(volume)
        self._call(
            f"delete the claim {name}",
            core_api().delete_namespaced_persistent_volume_claim,
            name,
            settings.BINDERY_K8S_NAMESPACE,
            answers=(404,),
        )

    # -- the API -------------------------------------------------------------------------------

    @staticmethod
    def _call(what: str, call: Callable[..., T], *args: Any, answers: tuple[int, ...]) -> T | None:
        """``call(*args)`` with the timeout; None for a status in ``answers`` (404 on read or
        delete, 409 on create). Raises ClusterUnavailable otherwise, the details logged."""
        namespace = settings.BINDERY_K8S_NAMESPACE
        try:
            return call(*args, _request_timeout=float(settings.BINDERY_K8S_API_TIMEOUT))
        except ApiException as exc:
            if exc.status in answers:
                return None
            log.error(
                "kubernetes API refused to %s in namespace %s: %s %s %s",
                what, namespace, exc.status, exc.reason, str(exc.body or "")[:500],
            )  # fmt: skip
            if exc.status in (401, 403):
                raise ClusterUnavailable(
                    "Bindery may not manage volumes on the cluster; an operator must check "
                    "its access (RBAC).",
                    code="K8S_FORBIDDEN",
                ) from None
            raise ClusterUnavailable() from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("kubernetes API: could not %s: %r", what, exc)
            raise ClusterUnavailable() from None


if TYPE_CHECKING:
    _checked: SessionBackend = KubernetesSessions()  # mypy: the class keeps the protocol
