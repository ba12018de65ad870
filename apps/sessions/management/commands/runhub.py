"""``manage.py runhub``: write the hub's configuration from settings and exec JupyterHub.

Stopping: the process manager's TERM or INT reaches JupyterHub itself (exec), which stops
every user server and its proxy (``cleanup_servers``, ``cleanup_proxy``). Two things make
that hold when the stop is not clean:

- a watchdog (double-forked, in a session of its own so a process-group KILL misses it,
  then ``apps/sessions/hubprocs.py`` run as a script of the standard library only) notices
  when the hub loses its supervisor (honcho killed: the hub is reparented), gives it time to
  finish its own cleanup, then stops it; and once the hub is gone, by whatever means, it
  stops the proxy and servers the hub left;
- at start, what a hub killed outright left in ``BINDERY_HUB_DIR`` is stopped first: an
  orphaned hub, its proxy, the servers its database says are running. Only processes
  proven ours are signalled: the pid files and database of this hub directory, checked
  against ``/proc/<pid>`` (the hub's argv names this config file, the proxy's environment
  holds this hub's proxy token, a server's names its hub user and server).

Both are the local backend's (``backend.name == "local"``). With the kubernetes backend the
hub is a pod's main process: the kubelet supervises and restarts it (a watchdog would take
a parent-less process for an orphan), its servers are pods it finds again after a restart
(``cleanup_servers`` is off), and no server is a process here to clean up.
``BINDERY_K8S_KUBECONFIG``, when set, is handed to KubeSpawner as ``KUBECONFIG``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.sessions.backends import get_session_backend
from apps.sessions.hubprocs import HubDir, Proc, start_watchdog, stop_all
from portal.hubconfig import (
    proxy_api_bind,
    proxy_command,
    python_proxy,
    split_bind,
    write_hub_config,
)


def _port_taken(bind: str) -> bool:
    host, port = split_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _stop_previous_hub(hub_dir: HubDir, say: Callable[[str], None]) -> Proc | None:
    """Stop a hub of this directory that lost its supervisor (reparented to init) and what
    it leaves. A supervised one is left alone and returned: nothing of it is touched."""
    previous = hub_dir.hub()
    if previous is not None and previous.ppid() != 1:
        return previous
    if previous is not None:
        say(f"stopping a previous hub that lost its supervisor (pid {previous.pid})")
        stop_all([previous])  # it stops its servers and proxy itself if it can
    hub_dir.stop_leftovers(say)
    return None


class Command(BaseCommand):
    help = "Run JupyterHub and its proxy with the configuration generated from settings."
    requires_system_checks: list[str] = []  # the hub needs no database; start fast

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--write-config",
            action="store_true",
            help="Only write the configuration file and print its path.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["write_config"]:
            self.stdout.write(str(write_hub_config()))
            return
        hub_dir = HubDir(Path(settings.BINDERY_HUB_DIR).resolve())
        backend = get_session_backend()
        local = backend.name == "local"  # servers are this machine's processes

        def say(message: str) -> None:
            self.stdout.write(f"hub: {message}")
            self.stdout.flush()

        running = _stop_previous_hub(hub_dir, say) if local and hub_dir.path.is_dir() else None
        binds = {
            "BINDERY_HUB_API_BIND": settings.BINDERY_HUB_API_BIND,
            "BINDERY_HUB_BIND": settings.BINDERY_HUB_BIND,
            "BINDERY_HUB_PROXY_API_BIND": proxy_api_bind(),
        }
        for name, bind in binds.items():
            if _port_taken(bind):
                raise CommandError(
                    f"{bind} ({name}) is already in use: is another hub running? "
                    f"Stop it or set {name} to a free address."
                )
        if running is not None:
            raise CommandError(
                f"another hub (pid {running.pid}) runs with BINDERY_HUB_DIR={hub_dir.path}:"
                " stop it first."
            )
        path = write_hub_config()
        say(f"{settings.BINDERY_HUB_URL} (API {settings.BINDERY_HUB_API_URL}), config {path}")
        if proxy_command() == [str(python_proxy())]:
            self.stderr.write(
                "hub: WARNING: the npm configurable-http-proxy is not installed (run bin/setup;"
                " it needs node and npm): using the Python one, which drops the kernel"
                " websocket's subprotocol (notebooks reconnect) and holds back streams."
            )
        self.stderr.flush()
        os.chdir(path.parent)
        if local:
            start_watchdog(hub_dir, settings.BINDERY_HUB_ORPHAN_GRACE)
        elif backend.name == "kubernetes" and settings.BINDERY_K8S_KUBECONFIG:
            # KubeSpawner reads KUBECONFIG (else the pod's service account)
            os.environ["KUBECONFIG"] = str(Path(settings.BINDERY_K8S_KUBECONFIG).resolve())
        # exec, so the process manager's signals reach the hub (SIGTERM: it stops, and
        # locally its servers with it)
        argv = [sys.executable, "-m", "jupyterhub", "--config", str(path)]
        os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no user input
