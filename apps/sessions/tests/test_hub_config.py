"""The generated hub configuration and ``manage.py runhub``."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from apps.sessions.contract import signing_key
from apps.sessions.tests.conftest import Hub
from portal.hubconfig import PORTAL_SCOPES, hub_config, proxy_command, write_hub_config

BASE_DIR = Path(django_settings.BASE_DIR)
VENV_PROXY = str(Path(sys.executable).parent / "configurable-http-proxy")


def test_npm_proxy_is_preferred_when_on_path(tmp_path: Path) -> None:
    npm_proxy = tmp_path / "configurable-http-proxy"
    npm_proxy.write_text("#!/bin/sh\nexit 0\n")
    npm_proxy.chmod(0o755)
    assert proxy_command(path=f"{tmp_path}:/usr/bin") == [str(npm_proxy)]


def test_python_proxy_is_used_by_absolute_path_otherwise(tmp_path: Path) -> None:
    assert proxy_command(path=str(tmp_path)) == [VENV_PROXY]
    # the venv's own script on PATH is not mistaken for the npm proxy
    assert proxy_command(path=str(Path(sys.executable).parent)) == [VENV_PROXY]
    assert os.access(VENV_PROXY, os.X_OK)


def test_config_follows_settings(settings: Any, tmp_path: Path) -> None:
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    settings.BINDERY_HUB_BIND = "127.0.0.1:9101"
    settings.BINDERY_HUB_API_BIND = "127.0.0.1:9181"
    settings.BINDERY_HUB_URL = "https://hub.example.org"
    settings.BINDERY_HUB_TOKEN = "portal-token-for-the-test"
    settings.BINDERY_SANDBOX = "bwrap"
    config = hub_config()
    hub = config["JupyterHub"]
    assert hub["bind_url"] == "http://127.0.0.1:9101/"
    assert hub["hub_bind_url"] == "http://127.0.0.1:9181"
    assert hub["public_url"] == "https://hub.example.org/"
    assert hub["db_url"] == f"sqlite:///{tmp_path / 'hub' / 'jupyterhub.sqlite'}"
    assert hub["allow_named_servers"] is True
    assert hub["named_server_limit_per_user"] == 0
    assert hub["tornado_settings"] == {"slow_spawn_timeout": 0}
    assert hub["services"] == [{"name": "bindery-portal", "api_token": "portal-token-for-the-test"}]
    assert hub["load_roles"][0]["scopes"] == list(PORTAL_SCOPES)
    assert config["ConfigurableHTTPProxy"]["api_url"] == "http://127.0.0.1:9102"
    spawner = config["BinderySpawner"]
    assert spawner["signing_key_hex"] == signing_key("portal-token-for-the-test").hex()
    assert spawner["sandbox"] == "bwrap"
    assert spawner["uid_base"] == settings.BINDERY_SANDBOX_UID_BASE
    assert spawner["starts_at_once"] == settings.BINDERY_SERVER_STARTS_AT_ONCE >= 2
    assert spawner["lean_start"] is settings.BINDERY_SERVER_LEAN_START is True
    assert "sandbox_hide" not in spawner  # nothing to hide: a sandbox binds only what it needs
    assert config["Spawner"]["environment"]["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "1"


def test_session_network_follows_settings(settings: Any, tmp_path: Path) -> None:
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    settings.BINDERY_SESSION_NETWORK = "isolated"
    assert hub_config()["BinderySpawner"]["network"] == "isolated"
    del settings.BINDERY_SESSION_NETWORK
    assert hub_config()["BinderySpawner"]["network"] == "auto"  # the default where unset


def test_written_config_is_private_and_keeps_the_proxy_token(settings: Any, tmp_path: Path) -> None:
    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    path = write_hub_config()
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((path.parent / "proxy_token").stat().st_mode) == 0o600
    assert write_hub_config().read_text() == first  # same secrets on every run
    compile(first, str(path), "exec")


def test_runhub_config_is_what_the_running_hub_uses(hub: Hub) -> None:
    text = (hub.dirs["hub"] / "jupyterhub_config.py").read_text()
    assert f"'http://{hub.environ['BINDERY_HUB_API_BIND']}'" in text
    assert "apps.sessions.backends.local.spawner.BinderySpawner" in text
    assert stat.S_IMODE((hub.dirs["hub"] / "jupyterhub_config.py").stat().st_mode) == 0o600


def test_runhub_exits_clearly_when_the_port_is_taken(hub: Hub) -> None:
    # the running test hub holds its API port: a second hub on the same settings must not start
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "runhub"],
        cwd=BASE_DIR,
        env={**os.environ, **hub.environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{hub.environ['BINDERY_HUB_API_BIND']} (BINDERY_HUB_API_BIND) is already in use" in (
        result.stderr
    )
    assert hub.process.poll() is None  # and the running hub is unharmed


def test_runhub_checks_the_public_port_too(hub: Hub, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = {
            **hub.environ,
            "BINDERY_HUB_DIR": str(tmp_path / "hub"),
            "BINDERY_HUB_BIND": f"127.0.0.1:{port}",
            "BINDERY_HUB_API_BIND": "127.0.0.1:0",
        }
        result = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "runhub"],
            cwd=BASE_DIR,
            env={**os.environ, **environ},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "(BINDERY_HUB_BIND) is already in use" in result.stderr
