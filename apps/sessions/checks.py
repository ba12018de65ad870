"""System checks (``manage.py check``, and every process start) for the session backend.

With ``BINDERY_BACKEND=kubernetes`` every setting the hub's spawner and the volume code read
must be usable; nothing here contacts the cluster.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HINT = "See the 'Kubernetes sessions' settings in portal/settings.py."


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problems() -> list[str]:
    from kubernetes.utils import parse_quantity

    found = []
    # BINDERY_REGISTRY_PREFIX (the only images the hub's spawner runs) is the builder's
    # check, bindery.E020: both sides need it, one error says so.
    if not _DNS_LABEL.fullmatch(str(settings.BINDERY_K8S_NAMESPACE)):
        found.append(
            f"BINDERY_K8S_NAMESPACE ({settings.BINDERY_K8S_NAMESPACE!r}) is not a DNS label."
        )
    selector = settings.BINDERY_K8S_SESSION_NODE_SELECTOR
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        found.append('BINDERY_K8S_SESSION_NODE_SELECTOR must be a JSON object {"label": "value"}.')
    tolerations = settings.BINDERY_K8S_SESSION_TOLERATIONS
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        found.append("BINDERY_K8S_SESSION_TOLERATIONS must be a JSON list of tolerations.")
    try:
        if parse_quantity(settings.BINDERY_K8S_VOLUME_SIZE) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        found.append(
            f"BINDERY_K8S_VOLUME_SIZE ({settings.BINDERY_K8S_VOLUME_SIZE!r}) is not a size "
            "such as 10Gi."
        )
    timeout = settings.BINDERY_K8S_API_TIMEOUT
    if not isinstance(timeout, int | float) or timeout <= 0:
        found.append("BINDERY_K8S_API_TIMEOUT must be a positive number of seconds.")
    return found


@checks.register()
def kubernetes_sessions_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With BINDERY_BACKEND=kubernetes: one error per unusable session setting
    (bindery.E030); W030 when user pods could not reach the hub, W031 when the registry
    prefix is not a path of its own."""
    if settings.BINDERY_BACKEND != "kubernetes":
        return []
    found: list[checks.CheckMessage] = [
        checks.Error(problem, hint=_HINT, id="bindery.E030") for problem in _problems()
    ]
    hub_host = urlsplit(settings.BINDERY_HUB_API_URL).hostname or ""
    if _loopback(hub_host):
        found.append(
            checks.Warning(
                f"BINDERY_HUB_API_URL ({settings.BINDERY_HUB_API_URL}) is on loopback: session "
                "pods reach the hub's API at the same address, which in a pod is the pod itself.",
                hint="Use the hub's Service, e.g. http://bindery-hub:8081/hub/api.",
                id="bindery.W030",
            )
        )
    prefix = settings.BINDERY_REGISTRY_PREFIX
    if prefix and not prefix.endswith("/"):
        found.append(
            checks.Warning(
                f"BINDERY_REGISTRY_PREFIX ({prefix}) does not end with '/': sessions may run "
                f"images of any repository whose name starts with it ({prefix}-other/...).",
                hint="End it with '/', e.g. registry.example.org/bindery/.",
                id="bindery.W031",
            )
        )
    return found
