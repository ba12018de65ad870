"""The JupyterHub configuration, generated from the portal's settings.

``manage.py runhub`` writes it to ``BINDERY_HUB_DIR/jupyterhub_config.py`` (mode 0600: it
holds the portal's service token, the launch-signing key and the proxy token) and runs the
hub with it. The hub:

- serves users through its proxy on ``BINDERY_HUB_BIND`` (public URL ``BINDERY_HUB_URL``) and
  its REST API on its own port, ``BINDERY_HUB_API_BIND``: the portal calls the API there
  because the Python configurable-http-proxy holds back streamed responses (``/progress``);
- keeps its state (sqlite, cookie secret, proxy token, pid files) in ``BINDERY_HUB_DIR``;
- knows one service, the portal, whose token holds only :data:`PORTAL_SCOPES`;
- has no login: users reach their servers with per-session, server-scoped tokens the portal
  mints (``?token=`` is allowed on the servers for the first visit);
- runs the session backend's spawner (``SessionBackend.hub_config``; locally
  ``apps.sessions.backends.local.spawner.BinderySpawner``), which accepts only launch options
  signed with a key derived from the portal's token (``apps.sessions.contract``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.sessions.hubprocs import CONFIG_NAME

PORTAL_SERVICE = "bindery-portal"

# Exactly what the portal does through the hub, and nothing more:
PORTAL_SCOPES = (
    # create users (POST /users/{name}; no narrower scope exists), delete temporary ones,
    # list users with their servers and read last_activity. Non-admins cannot grant admin.
    "admin:users",
    "read:servers",  # server models, /progress
    "start:servers",  # start named servers with user_options
    "delete:servers",  # stop and remove them
    "tokens",  # mint and revoke per-session server-scoped tokens for users
)
# Deliberately absent: access:servers (the portal never uses a user's server),
# admin:server_state, admin:groups, admin:services / list:services, read:hub, proxy, shutdown.


def split_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:8001"`` → ``("127.0.0.1", 8001)``."""
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def proxy_api_bind() -> str:
    """Where the proxy's own API listens (only the hub talks to it): the public port + 1
    unless ``BINDERY_HUB_PROXY_API_BIND`` is set."""
    explicit = getattr(settings, "BINDERY_HUB_PROXY_API_BIND", "")
    if explicit:
        return str(explicit)
    host, port = split_bind(settings.BINDERY_HUB_BIND)
    return f"{host}:{port + 1}"


def local_proxy_bin() -> Path:
    """Where ``bin/setup`` installs the npm proxy (``proxy/``, from its lockfile)."""
    return Path(settings.BASE_DIR).resolve() / "proxy" / "node_modules" / ".bin"


def python_proxy() -> Path:
    """The PyPI configurable-http-proxy in this virtualenv: the fallback only, because it
    drops websocket subprotocols (the kernel's) and holds back streamed responses."""
    return Path(sys.executable).parent / "configurable-http-proxy"


def proxy_command(path: str | None = None) -> list[str]:
    """The npm ``configurable-http-proxy`` by absolute path: the one ``bin/setup`` installs
    under ``proxy/``, else one on ``PATH`` (``path``, when given, is searched instead of
    both); else the Python one in this virtualenv (never on PATH unless activated)."""
    venv_proxy = python_proxy()
    search = (
        path
        if path is not None
        else os.pathsep.join([str(local_proxy_bin()), os.environ.get("PATH", os.defpath)])
    )
    found = shutil.which("configurable-http-proxy", path=search)
    if found and Path(found).resolve() != venv_proxy.resolve():
        return [str(Path(found).absolute())]
    return [str(venv_proxy)]


def _local_secret(path: Path) -> str:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def hub_config() -> dict[str, dict[str, Any]]:
    """The configuration as ``{section: {trait: value}}``, values plain Python literals: the
    hub's own sections here, the spawner's from the session backend."""
    from apps.sessions.backends import get_session_backend

    hub_dir = Path(settings.BINDERY_HUB_DIR).resolve()
    hub_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config: dict[str, dict[str, Any]] = {
        "JupyterHub": {
            "bind_url": f"http://{settings.BINDERY_HUB_BIND}/",
            "public_url": settings.BINDERY_HUB_URL.rstrip("/") + "/",
            # Per-user subdomains (https://<user>.<host>): no two users share an origin.
            "subdomain_host": settings.BINDERY_HUB_SUBDOMAIN_HOST,
            "hub_bind_url": f"http://{settings.BINDERY_HUB_API_BIND}",
            "db_url": f"sqlite:///{hub_dir / 'jupyterhub.sqlite'}",
            "cookie_secret_file": str(hub_dir / "jupyterhub_cookie_secret"),
            "pid_file": str(hub_dir / "jupyterhub.pid"),
            "authenticator_class": "null",
            "allow_named_servers": True,
            "named_server_limit_per_user": 0,
            "tornado_settings": {"slow_spawn_timeout": 0},
            "last_activity_interval": 60,
            "cleanup_servers": True,
            "services": [{"name": PORTAL_SERVICE, "api_token": settings.BINDERY_HUB_TOKEN}],
            "load_roles": [
                {
                    "name": PORTAL_SERVICE,
                    "description": "The Bindery portal: users, named servers, their tokens.",
                    "scopes": list(PORTAL_SCOPES),
                    "services": [PORTAL_SERVICE],
                }
            ],
        },
        "ConfigurableHTTPProxy": {
            "command": proxy_command(),
            "api_url": f"http://{proxy_api_bind()}",
            "auth_token": _local_secret(hub_dir / "proxy_token"),
            "pid_file": str(hub_dir / "proxy.pid"),
        },
        "Spawner": {
            # JupyterHub >= 5 ignores ?token= on servers without this; the portal's ready
            # URL carries the session's server-scoped token for the first visit.
            "environment": {
                "JUPYTERHUB_ALLOW_TOKEN_IN_URL": "1",
                "JUPYTERHUB_ACTIVITY_INTERVAL": "60",
            },
            "start_timeout": 120,
            "http_timeout": 60,
            "poll_interval": 5,
        },
    }
    for section, values in get_session_backend().hub_config().items():
        config.setdefault(section, {}).update(values)
    return config


def render_hub_config(config: dict[str, dict[str, Any]]) -> str:
    """The config as a JupyterHub config file (Python), values written as literals."""
    lines = [
        "# Generated by `manage.py runhub` from the portal's settings; edits are overwritten.",
        "import sys",
        "",
        f"sys.path.insert(0, {str(Path(settings.BASE_DIR).resolve())!r})  # the spawner",
        "c = get_config()  # noqa: F821",
    ]
    for section, values in config.items():
        lines.append("")
        lines += [f"c.{section}.{name} = {value!r}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_hub_config() -> Path:
    """Write the config under BINDERY_HUB_DIR (0700 directory, 0600 file); return its path."""
    text = render_hub_config(hub_config())
    path = Path(settings.BINDERY_HUB_DIR).resolve() / CONFIG_NAME
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(text)
    tmp.replace(path)
    return path
