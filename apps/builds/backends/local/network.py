"""The network of a build's sandboxed commands.

A build's sandboxed commands (every uv command, postBuild) run in a network namespace of
the build's own (``apps.netns``, as sessions do): outbound IPv4 through pasta, so the
package index and ``pip install`` in postBuild work, but every address of this machine is
unreachable: its loopback (PostgreSQL, Redis, the portal, the hub) and its other addresses.
Only the ports of a package index or HTTP proxy configured on this machine's loopback are
forwarded to it, and DNS when the host's resolver is on its loopback. The namespace is set
up once per build (about 30 ms) and entered by each command through ``nsenter`` (about 2 ms
each); it and its pasta end with the build, and die with the worker.
``BINDERY_BUILD_NETWORK``: ``auto`` (isolated when root, bubblewrap, pasta, nsenter, ip and
an IPv4 default route are there, else the host's network, said once in the build log),
``isolated`` (required) or ``shared`` (the host's network).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from apps import netns
from apps.builds.backends.local.runner import Job, log_once
from portal import sandbox_network
from portal.errors import BackendError

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
# The machine's egress settings (CA bundles, proxies): npm, pip, git and curl in postBuild and
# build backends need them as the host's own clients do.
CA_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
          "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")  # fmt: skip
PASSED_ENV = (*CA_ENV, "NO_PROXY", "no_proxy", *PROXY_ENV)
_NETWORKS = ("auto", "isolated", "shared")


def network_plan(sandboxed: bool) -> tuple[netns.Tools | None, str]:
    """How sandboxed build commands reach the network, from settings.BINDERY_BUILD_NETWORK:
    ``(tools, "")`` for a namespace of the build's own, ``(None, why)`` for the host's
    network. Raises SANDBOX_UNAVAILABLE when it is ``isolated`` and that is impossible."""
    wanted = str(getattr(settings, "BINDERY_BUILD_NETWORK", "auto")).lower()
    if wanted not in _NETWORKS:
        raise BackendError(
            f"BINDERY_BUILD_NETWORK is {wanted!r}: it must be auto, isolated or shared.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    if wanted == "shared":
        return None, "BINDERY_BUILD_NETWORK is shared"
    tools, problem = None, "there is no bubblewrap sandbox"
    if sandboxed:
        tools, problem = netns.find_tools(who="the build worker")
    if tools is None and wanted == "isolated":
        raise BackendError(
            f"BINDERY_BUILD_NETWORK is isolated, but {problem}.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    return tools, problem


def loopback_services(environ: dict[str, str]) -> list[tuple[int, str]]:
    """``(port, what)`` for the package index and HTTP proxies (in ``environ``) configured on
    this machine's loopback (127.0.0.1 or localhost): the ports an isolated build reaches."""
    found: dict[int, str] = {}
    wanted = [("the package index", str(settings.BINDERY_PACKAGE_INDEX or ""))]
    wanted += [(name, environ.get(name, "")) for name in PROXY_ENV]
    for what, url in wanted:
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            continue
        if port and (parts.hostname or "") in ("127.0.0.1", "localhost"):
            found.setdefault(port, what)
    return sorted(found.items())


@dataclass(frozen=True)
class Isolation:
    """How a build's sandboxed commands enter its network namespace: ``prefix`` (nsenter)
    before bubblewrap, ``pass_fds`` for it, ``resolv`` a file bubblewrap shows as
    /etc/resolv.conf (DNS through pasta) or None."""

    prefix: tuple[str, ...]
    pass_fds: tuple[int, ...]
    resolv: str | None


@dataclass(frozen=True)
class Network:
    """How one build's sandboxed commands reach the network: ``tools`` None for the host's,
    else one namespace of the build's own (``apps.netns.Namespace``) that reaches the host's
    loopback on ``to_host`` only; ``resolv`` is the sandbox's resolv.conf when DNS goes
    through pasta."""

    tools: netns.Tools | None
    to_host: tuple[int, ...] = ()
    resolv: str | None = None

    @contextmanager
    def isolation(self, job: Job) -> Iterator[Isolation | None]:
        """The build's namespace while the block runs (None: the host's network); the
        namespace and its pasta end with the block, however it ends. Raises
        SANDBOX_UNAVAILABLE when it cannot be set up."""
        if self.tools is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="bindery-netns-") as scratch:
            resolv = None
            if self.resolv is not None:
                resolv = os.path.join(scratch, "resolv.conf")
                Path(resolv).write_text(self.resolv)
                os.chmod(resolv, 0o644)
            with job.timed("network"):
                try:
                    # from the build's thread: the namespace's holder and pasta die with it
                    namespace = netns.Namespace.create(
                        self.tools, to_host=self.to_host,
                        dns_forward=netns.DNS_FORWARD if resolv is not None else None,
                        blocked=sandbox_network.blocked_networks(),
                        allowed=sandbox_network.allowed_networks(),
                    )  # fmt: skip
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                    raise BackendError(
                        f"The build's sandbox could not get a network of its own: {exc}",
                        permanent=False,
                        code="SANDBOX_UNAVAILABLE",
                    ) from exc
            try:
                yield Isolation(tuple(namespace.enter), namespace.pass_fds, resolv)
            finally:
                with job.timed("network"):
                    namespace.close()


def build_network(job: Job, *, sandboxed: bool) -> Network:
    """This build's :class:`Network` (``sandboxed``: its commands run in bubblewrap), said
    once in the build log."""
    tools, why = network_plan(sandboxed=sandboxed)
    if tools is None:
        message = (
            f"Build commands use this machine's network ({why}): a repository's build code "
            "can reach every service listening on this machine, its loopback included."
        )
        if why == "BINDERY_BUILD_NETWORK is shared":  # as configured: said, not warned
            job.say(message)
            log_once(message)
        else:
            job.warn(message)
            log_once(f"{message} Install passt (pasta) and bubblewrap to isolate builds.")
        return Network(None)
    services = loopback_services({k: v for k in PROXY_ENV if (v := os.environ.get(k))})
    resolv = netns.host_sandbox_resolv_conf(netns.DNS_FORWARD)
    extra = [f"port {port} of this machine's loopback ({what})" for port, what in services]
    if resolv is not None:
        extra.append(f"DNS through this machine's resolver ({netns.DNS_FORWARD})")
    job.say(
        "Build commands get a network of their own: the internet through pasta, nothing "
        "on this machine" + (f" but {', '.join(extra)}" if extra else "")
    )
    return Network(tools, tuple(port for port, _ in services), resolv)
