"""What sandboxes (builds and sessions) may not reach on the network, from the settings.

``apps.netns`` applies the policy and knows nothing of Django; this module gives it the
parts only the portal knows: the hosts of the configured database and Redis, which a
sandbox must never reach even when their range is allowed, and the operator's
``BINDERY_SANDBOX_ALLOWED_NETWORKS``. The local builder passes both to
``netns.Namespace.create``; the hub config hands them to the spawner.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps import netns

log = logging.getLogger(__name__)


def parse_networks(values: Iterable[str], *, name: str) -> list[str]:
    """``values`` (CIDRs or addresses) as normalised networks; raises ImproperlyConfigured
    naming the setting ``name`` for one that is neither. Used by settings.py."""
    found = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            net = str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {text!r} is not a network (write CIDRs such as 10.1.0.0/16)"
            ) from None
        if net not in found:
            found.append(net)
    return found


def service_hosts() -> list[str]:
    """The host names or addresses of the databases, Redis and the Celery broker as
    configured (unix sockets and empty hosts left out)."""
    hosts = [str(db.get("HOST") or "") for db in settings.DATABASES.values()]
    for url in (settings.REDIS_URL, getattr(settings, "CELERY_BROKER_URL", "")):
        parts = urlsplit(str(url or ""))
        if parts.scheme in ("redis", "rediss") and parts.hostname:
            hosts.append(parts.hostname)
    return [h for h in dict.fromkeys(hosts) if h and not h.startswith("/")]


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:  # the portal could not reach it either: nothing to block
        log.warning("sandbox network: could not resolve %s (%s); not blocked by address", host, exc)
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def service_networks() -> list[str]:
    """The addresses of :func:`service_hosts` as /32 (/128) networks, loopback ones left
    out (a sandbox's loopback is its own)."""
    found = []
    for host in service_hosts():
        for address in _addresses(host):
            ip = ipaddress.ip_address(address)
            if not ip.is_loopback:
                found.append(str(ipaddress.ip_network(ip)))
    return list(dict.fromkeys(found))


def blocked_networks() -> list[str]:
    """What a sandbox may not reach besides this machine's own addresses (which
    ``apps.netns`` always prohibits): ``netns.DEFAULT_BLOCKED`` and the hosts of the
    database and Redis. Resolves host names (once per call: call it when a namespace is
    made, or when the hub config is written)."""
    return [*netns.DEFAULT_BLOCKED, *service_networks()]


def allowed_networks() -> list[str]:
    """``BINDERY_SANDBOX_ALLOWED_NETWORKS``: blocked ranges the operator lifts (a more
    specific blocked network inside one, such as the database's host, stays blocked)."""
    return list(settings.BINDERY_SANDBOX_ALLOWED_NETWORKS)


__all__ = [
    "allowed_networks",
    "blocked_networks",
    "parse_networks",
    "service_hosts",
    "service_networks",
]
