"""``manage.py runhub``: write the hub's configuration from settings and exec JupyterHub."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.hubconfig import proxy_api_bind, split_bind, write_hub_config


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


def _previous_proxy_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


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
        binds = {"BINDERY_HUB_API_BIND": settings.BINDERY_HUB_API_BIND}
        if not _previous_proxy_alive(Path(settings.BINDERY_HUB_DIR) / "proxy.pid"):
            # (a proxy left by a hub that died is replaced by JupyterHub itself)
            binds["BINDERY_HUB_BIND"] = settings.BINDERY_HUB_BIND
            binds["BINDERY_HUB_PROXY_API_BIND"] = proxy_api_bind()
        for name, bind in binds.items():
            if _port_taken(bind):
                raise CommandError(
                    f"{bind} ({name}) is already in use: is another hub running? "
                    f"Stop it or set {name} to a free address."
                )
        path = write_hub_config()
        self.stdout.write(
            f"hub: {settings.BINDERY_HUB_URL} (API {settings.BINDERY_HUB_API_URL}), config {path}"
        )
        self.stdout.flush()
        os.chdir(path.parent)
        # exec, so the process manager's signals reach the hub (SIGTERM stops its servers)
        argv = [sys.executable, "-m", "jupyterhub", "--config", str(path)]
        os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no user input
