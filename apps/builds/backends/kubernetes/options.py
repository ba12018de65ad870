"""The settings the kubernetes builder reads, checked once: ``problems()`` for the system
check (``manage.py check`` says each one), ``BuildOptions.from_settings()`` for the builder
(a misconfiguration fails the build with the same sentence). Nothing here contacts the
cluster or the registry, and nothing imports the kubernetes client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from apps.builds.backends.kubernetes import names
from portal.errors import BackendError

# Kubernetes resource quantities: "500m", "1.5", "2", "4Gi", "512M", "1e3".
_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?P<unit>[KMGTPE]i|[mkMGTPE]|e[0-9]+)?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_SAMPLE_SLUG = "org-repo-0123abcd"


def quantity_bytes(quantity: str) -> int:
    """``quantity`` (a Kubernetes memory quantity: "4Gi", "512M", "1073741824") in bytes.
    Raises ValueError for anything else."""
    found = _QUANTITY.fullmatch(quantity.strip())
    if found is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, unit = float(found["num"]), found["unit"] or ""
    if unit in _BINARY:
        return int(number * _BINARY[unit])
    if unit.startswith("e"):
        return int(number * 10 ** int(unit[1:]))
    return int(number * _DECIMAL[unit])


def _is_quantity(value: object) -> bool:
    return isinstance(value, str) and _QUANTITY.fullmatch(value.strip()) is not None


def problems(settings: Any) -> list[str]:
    """What is wrong with the kubernetes backend's settings, one sentence each (empty: none).

    Reads ``settings`` only (files named by it are looked at, nothing is contacted)."""
    found: list[str] = []
    namespace = getattr(settings, "BINDERY_K8S_NAMESPACE", "")
    if not isinstance(namespace, str) or not names.is_dns_label(namespace):
        found.append(
            f"BINDERY_K8S_NAMESPACE must be a namespace name (a DNS label), not {namespace!r}."
        )
    kubeconfig = getattr(settings, "BINDERY_K8S_KUBECONFIG", "")
    if kubeconfig and not Path(kubeconfig).is_file():
        found.append(f"BINDERY_K8S_KUBECONFIG names {kubeconfig}, which is not a file.")
    for name in ("BINDERY_K8S_API_TIMEOUT", "BINDERY_K8S_BUILD_TIMEOUT",
                 "BINDERY_K8S_BUILD_PENDING_TIMEOUT", "BINDERY_K8S_BUILD_POD_TTL"):  # fmt: skip
        value = getattr(settings, name, None)
        if not isinstance(value, int | float) or value <= 0:
            found.append(f"{name} must be a number of seconds above 0, not {value!r}.")
    image = getattr(settings, "BINDERY_K8S_BUILD_IMAGE", "")
    if not isinstance(image, str) or not image.strip():
        found.append("BINDERY_K8S_BUILD_IMAGE must name repo2docker's image, with a tag.")
    elif ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        found.append(
            f"BINDERY_K8S_BUILD_IMAGE ({image}) must be pinned to a tag or digest: the image "
            "is part of every environment key."
        )
    # portal.settings keeps malformed JSON as the text
    selector = getattr(settings, "BINDERY_K8S_BUILD_NODE_SELECTOR", {})
    if isinstance(selector, str):
        found.append(f"BINDERY_K8S_BUILD_NODE_SELECTOR is not valid JSON: {selector!r}.")
    elif not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        found.append(
            "BINDERY_K8S_BUILD_NODE_SELECTOR must be a JSON object of strings, e.g. "
            f'{{"bindery.io/node-purpose": "build"}}; got {selector!r}.'
        )
    tolerations = getattr(settings, "BINDERY_K8S_BUILD_TOLERATIONS", [])
    if isinstance(tolerations, str):
        found.append(f"BINDERY_K8S_BUILD_TOLERATIONS is not valid JSON: {tolerations!r}.")
    elif not isinstance(tolerations, list) or not all(
        isinstance(t, dict) and t and set(t) <= _TOLERATION_KEYS for t in tolerations
    ):
        found.append(
            "BINDERY_K8S_BUILD_TOLERATIONS must be a JSON list of tolerations (objects with "
            f"key, operator, value, effect, tolerationSeconds); got {tolerations!r}."
        )
    for name in ("BINDERY_K8S_BUILD_CPU_REQUEST", "BINDERY_K8S_BUILD_CPU_LIMIT",
                 "BINDERY_K8S_BUILD_MEMORY_REQUEST", "BINDERY_K8S_BUILD_MEMORY_LIMIT"):  # fmt: skip
        value = getattr(settings, name, "")
        if value != "" and not _is_quantity(value):
            found.append(
                f"{name} must be a Kubernetes quantity (e.g. 2, 500m, 4Gi), not {value!r}."
            )
    socket = getattr(settings, "BINDERY_K8S_DOCKER_SOCKET", "")
    if not isinstance(socket, str) or not socket.startswith("/"):
        found.append(
            "BINDERY_K8S_DOCKER_SOCKET must be the absolute path of the docker daemon's socket "
            f"on the build nodes, not {socket!r}."
        )
    prefix = getattr(settings, "BINDERY_REGISTRY_PREFIX", "")
    if not prefix:
        found.append(
            "BINDERY_REGISTRY_PREFIX must say where built images are pushed, e.g. "
            "registry.example.org/bindery/ (images are <prefix><repository slug>:<key>)."
        )
    elif not isinstance(prefix, str) or not names.is_valid_image(f"{prefix}{_SAMPLE_SLUG}:tag"):
        found.append(
            f"BINDERY_REGISTRY_PREFIX ({prefix!r}) does not make valid image names: it should "
            "be a lowercase registry host and path ending in / or -, e.g. "
            "registry.example.org/bindery/."
        )
    url = getattr(settings, "BINDERY_REGISTRY_URL", "")
    if url and not re.fullmatch(r"https?://[^/\s?#]+/?", str(url)):
        found.append(
            f"BINDERY_REGISTRY_URL must be the registry's base URL (https://host[:port]), "
            f"not {url!r}."
        )
    push_secret = getattr(settings, "BINDERY_REGISTRY_PUSH_SECRET", "")
    if push_secret and not (
        isinstance(push_secret, str)
        and len(push_secret) <= 253
        and _DNS_SUBDOMAIN.fullmatch(push_secret)
    ):
        found.append(f"BINDERY_REGISTRY_PUSH_SECRET must be a Secret's name, not {push_secret!r}.")
    return found


@dataclass(frozen=True)
class BuildOptions:
    """The builder's view of the settings (see .env.example, "Kubernetes backend")."""

    namespace: str = "bindery"
    build_image: str = "quay.io/jupyterhub/repo2docker:2024.07.0"
    registry_prefix: str = ""
    push_secret: str = ""
    docker_socket: str = "/var/run/docker.sock"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    api_timeout: float = 10.0  # seconds, each API call and registry request
    build_timeout: float = 1200.0  # seconds, the most a build may take (with the request's)
    pending_timeout: float = 300.0  # seconds a pod may stay Pending
    pod_ttl: float = 3600.0  # seconds a finished pod is kept (the cleaner)

    @classmethod
    def from_settings(cls) -> BuildOptions:
        """The options from Django's settings. Raises BackendError (permanent,
        K8S_MISCONFIGURED) naming every problem, as the system check does."""
        from django.conf import settings

        wrong = problems(settings)
        if wrong:
            raise BackendError(
                "The kubernetes backend is not configured: " + " ".join(wrong),
                code="K8S_MISCONFIGURED",
            )
        return cls(
            namespace=settings.BINDERY_K8S_NAMESPACE,
            build_image=settings.BINDERY_K8S_BUILD_IMAGE,
            registry_prefix=settings.BINDERY_REGISTRY_PREFIX,
            push_secret=settings.BINDERY_REGISTRY_PUSH_SECRET,
            docker_socket=settings.BINDERY_K8S_DOCKER_SOCKET,
            # JSON settings, their shapes checked by problems() above
            node_selector=dict(cast(dict[str, str], settings.BINDERY_K8S_BUILD_NODE_SELECTOR)),
            tolerations=list(cast(list[dict[str, Any]], settings.BINDERY_K8S_BUILD_TOLERATIONS)),
            cpu_request=settings.BINDERY_K8S_BUILD_CPU_REQUEST,
            cpu_limit=settings.BINDERY_K8S_BUILD_CPU_LIMIT,
            memory_request=settings.BINDERY_K8S_BUILD_MEMORY_REQUEST,
            memory_limit=settings.BINDERY_K8S_BUILD_MEMORY_LIMIT,
            api_timeout=float(settings.BINDERY_K8S_API_TIMEOUT),
            build_timeout=float(settings.BINDERY_K8S_BUILD_TIMEOUT),
            pending_timeout=float(settings.BINDERY_K8S_BUILD_PENDING_TIMEOUT),
            pod_ttl=float(settings.BINDERY_K8S_BUILD_POD_TTL),
        )
