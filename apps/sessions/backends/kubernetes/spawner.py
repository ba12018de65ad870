"""The spawner the hub runs for the kubernetes backend: KubeSpawner, fed only signed options.

The portal (:class:`~apps.sessions.backends.kubernetes.backend.KubernetesSessions`) builds a
:class:`~apps.sessions.backends.kubernetes.options.KubeLaunchOptions`, signs it
(``apps.sessions.contract``) and sends it as the named server's ``user_options``. The hub
runs :class:`BinderyKubeSpawner`, which accepts only options signed with the same key, for
its own hub user and server, running an image under the registry prefix and mounting only
the portal's claims under ``persistent/``; then KubeSpawner makes the pod.

No profile list and no other user option: what a pod runs is what the portal signed. The
pod runs as repo2docker's user (uid 1000, ``fsGroup`` 100 so the volumes are writable),
without privilege escalation, capabilities or a service-account token, under the runtime's
default seccomp profile.

Nothing here imports Django or ``portal``: the hub imports this module by its dotted path,
and the generated config (``portal/hubconfig.py`` with
:meth:`KubernetesSessions.hub_config`) passes everything the spawner needs as traitlets.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from kubespawner import KubeSpawner
from tornado import web
from traitlets import Float, Unicode, default

from apps.sessions import contract
from apps.sessions.backends.kubernetes.options import CLAIM_NAME, KubeLaunchOptions
from apps.sessions.contract import InvalidLaunchOptions, verify_user_options

MOUNT_ROOT = contract.MOUNT_ROOT
# A mount's path parts: slugs and ids (a team's slug), nothing KubeSpawner's templating
# ("{username}") or a shell would read specially.
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
# What may follow the registry prefix: repository path components, a tag, a digest.
_IMAGE_REST = re.compile(
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def _mount_path(mount: str) -> str:
    """``mount`` (relative to the home) checked: ``persistent`` or below it, plain parts."""
    norm = posixpath.normpath(mount) if mount else ""
    parts = norm.split("/")
    if mount.startswith("/") or norm != mount.rstrip("/") or parts[0] != MOUNT_ROOT:
        raise InvalidLaunchOptions(f"volumes are mounted under {MOUNT_ROOT}/")
    if not all(_PART.fullmatch(part) and part not in {".", ".."} for part in parts):
        raise InvalidLaunchOptions("a volume's mount point has characters that are not allowed")
    return norm


def _escape_env(value: str) -> str:
    """A value Kubernetes passes on unchanged: ``$(NAME)`` in an env value is expanded to
    another variable's value unless written ``$$(NAME)``, and ``$$`` becomes ``$``."""
    return value.replace("$", "$$")


def _validate_only(spawner: BinderyKubeSpawner, user_options: Any) -> None:
    """JupyterHub's ``apply_user_options`` hook: refuse bad options before ``start`` (an
    HTTPError here is the hub's answer); ``load_user_options`` applies them."""
    spawner.checked_options(user_options)


class BinderyKubeSpawner(KubeSpawner):
    """KubeSpawner that runs exactly what the portal signed, nothing a user chooses."""

    signing_key_hex = Unicode("", config=True, help="The launch options' HMAC key, in hex.")
    allowed_image_prefix = Unicode(
        "",
        config=True,
        help="Images must start with this (the registry prefix builds push to); empty: none "
        "is allowed.",
    )
    home_dir = Unicode(
        "/home/jovyan",
        config=True,
        help="The image's home and repository (repo2docker's REPO_DIR): volumes are mounted "
        "under its persistent/.",
    )
    cpu_guarantee_ratio = Float(
        0.25, min=0.0, max=1.0, config=True, help="cpu_guarantee = the signed CPU limit times this."
    )
    mem_guarantee_ratio = Float(
        1.0,
        min=0.0,
        max=1.0,
        config=True,
        help="mem_guarantee = the signed memory limit times this: 1 by default, since the "
        "portal admits sessions by their memory and a node short of memory kills pods.",
    )

    launch_options: KubeLaunchOptions | None = None

    # -- security defaults (the generated hub config leaves them as they are) -------------

    @default("uid")
    def _default_uid(self) -> int:
        return 1000  # repo2docker's jovyan

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return 100  # volumes are group-writable for the pod's processes

    @default("allow_privilege_escalation")
    def _default_allow_privilege_escalation(self) -> bool:
        return False

    @default("container_security_context")
    def _default_container_security_context(self) -> dict[str, Any]:
        return {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}

    @default("pod_security_context")
    def _default_pod_security_context(self) -> dict[str, Any]:
        return {"seccompProfile": {"type": "RuntimeDefault"}}

    @default("automount_service_account_token")
    def _default_automount_service_account_token(self) -> bool:
        return False  # a session has no business with the Kubernetes API

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[BinderyKubeSpawner, Any], None]:
        return _validate_only

    # -- validation --------------------------------------------------------------------------

    def validate_options(self, user_options: Any, *, now: float | None = None) -> KubeLaunchOptions:
        """Verified, checked launch options; raises InvalidLaunchOptions."""
        key = bytes.fromhex(self.signing_key_hex) if self.signing_key_hex else b""
        options = KubeLaunchOptions.from_dict(verify_user_options(user_options, key, now=now))
        if (options.hub_user, options.server_name) != (self.user.name, self.name):
            raise InvalidLaunchOptions("the launch options were signed for another server")
        prefix = self.allowed_image_prefix
        rest = options.image[len(prefix) :]
        if not prefix or not options.image.startswith(prefix) or not _IMAGE_REST.fullmatch(rest):
            raise InvalidLaunchOptions("the image is not one of this installation's builds")
        volumes: list[tuple[str, str]] = []
        for claim, mount in options.volumes:
            if not CLAIM_NAME.fullmatch(claim):
                raise InvalidLaunchOptions("a volume is not one of the portal's claims")
            volumes.append((claim, _mount_path(mount)))
        if len({m for _, m in volumes}) != len(volumes):
            raise InvalidLaunchOptions("two volumes share a mount point")
        if len({c for c, _ in volumes}) != len(volumes):
            raise InvalidLaunchOptions("a claim is mounted twice")
        if options.default_url and not options.default_url.startswith("/"):
            raise InvalidLaunchOptions("default_url must start with /")
        # parents before children, so a team volume is mounted inside the user's volume
        volumes.sort(key=lambda v: v[1].count("/"))
        return KubeLaunchOptions(**{**options.to_dict(), "volumes": tuple(volumes)})

    def checked_options(self, user_options: Any) -> KubeLaunchOptions:
        """:meth:`validate_options`, a refusal as the hub's HTTP 400 (as the local spawner)."""
        try:
            return self.validate_options(user_options)
        except InvalidLaunchOptions as exc:
            self.log.warning("Refusing launch options for %s: %s", self._log_name, exc)
            raise web.HTTPError(400, f"Invalid launch options: {exc}") from exc

    async def load_user_options(self) -> None:
        """Apply the signed options to the pod's traits (KubeSpawner's hook, called first in
        ``start``; no profile list). Raises HTTPError 400 for options the hub must refuse."""
        options = self.checked_options(self.user_options)
        self.launch_options = options
        self.image = options.image
        self.mem_limit = options.memory_bytes
        self.mem_guarantee = int(options.memory_bytes * self.mem_guarantee_ratio)
        self.cpu_limit = options.cpu
        self.cpu_guarantee = options.cpu * self.cpu_guarantee_ratio if options.cpu else None
        self.volumes = [
            {"name": claim, "persistentVolumeClaim": {"claimName": claim}}
            for claim, _ in options.volumes
        ]
        self.volume_mounts = [
            {"name": claim, "mountPath": posixpath.join(self.home_dir, mount)}
            for claim, mount in options.volumes
        ]
        # JupyterHub formats default_url as a template ("{username}"): braces are doubled so
        # the path the portal checked is the path the server gets
        self.default_url = options.default_url.replace("{", "{{").replace("}", "}}")

    # -- environment -------------------------------------------------------------------------

    def get_env(self) -> dict[str, Any]:
        env: dict[str, Any] = super().get_env()
        # BINDER_* as mybinder sets them. Not through the `environment` trait, which
        # KubeSpawner expands as a template; "$" escaped, which Kubernetes would expand.
        if self.launch_options is not None:
            for name, value in self.launch_options.binder_env().items():
                env[name] = _escape_env(value)
        return env
