"""Production settings: fail fast without secrets, and pass `check --deploy` with no warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "BINDERY_ENV": "production",
    "SECRET_KEY": "p" * 20 + "-production-secret-key-for-the-deploy-check-0123456789",
    "DATABASE_URL": "postgres://bindery@127.0.0.1:5432/bindery",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "bindery.example.org",
    "BINDERY_ENCRYPTION_KEY": "Tz0GJmDmPpA-9gYq8AxOvQ4x2bHqS2V8CSd8Yd4u8eE=",
    "BINDERY_HUB_TOKEN": "h" * 64,
    # The hub on a host of its own: the portal refuses to start when they share one.
    "BINDERY_SITE_URL": "https://bindery.example.org",
    "BINDERY_HUB_URL": "https://hub.example.net",
}


def test_check_deploy_prints_no_warnings(tmp_path):
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", BINDERY_VAR_DIR=str(tmp_path), **PRODUCTION
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_production_without_secret_key_fails_fast(tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = _manage("check", BINDERY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when BINDERY_ENV=production" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_local_secret_key_is_generated_once_and_kept(tmp_path):
    for _ in range(2):
        assert _manage("check", BINDERY_VAR_DIR=str(tmp_path)).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"
    _manage("check", BINDERY_VAR_DIR=str(tmp_path))
    assert (tmp_path / "secret_key").read_text() == key


def test_production_refuses_a_hub_on_the_portals_host_name(tmp_path):
    # Another port is not another host for cookies: the portal's would reach user servers.
    env = {**PRODUCTION, "BINDERY_HUB_URL": "https://Bindery.example.org:8443"}
    result = _manage("check", BINDERY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "BINDERY_HUB_URL must not have the portal's host name (bindery.example.org)" in (
        result.stderr
    )


def test_production_refuses_user_subdomains_under_the_portals_host_name(tmp_path):
    env = {**PRODUCTION, "BINDERY_HUB_SUBDOMAIN_HOST": "https://bindery.example.org"}
    result = _manage("check", BINDERY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "BINDERY_HUB_SUBDOMAIN_HOST must not have the portal's host name" in result.stderr


def test_production_starts_with_the_hub_and_its_subdomains_elsewhere(tmp_path):
    env = {**PRODUCTION, "BINDERY_HUB_SUBDOMAIN_HOST": "hub.example.net"}
    result = _manage("check", BINDERY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    shown = _manage(
        "shell", "-c",
        "from django.conf import settings; print(settings.BINDERY_HUB_SUBDOMAIN_HOST)",
        BINDERY_VAR_DIR=str(tmp_path), **env,
    )  # fmt: skip
    assert shown.stdout.strip().splitlines()[-1] == "https://hub.example.net"  # as the hub does


def test_development_allows_the_shared_host(tmp_path):
    # One laptop: 127.0.0.1:8000 and :8001 (the defaults) are fine outside production.
    result = _manage(
        "check", BINDERY_VAR_DIR=str(tmp_path), BINDERY_SITE_URL="http://127.0.0.1:8000",
        BINDERY_HUB_URL="http://127.0.0.1:8001",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_secret_files_lose_their_trailing_newline(tmp_path):
    """`<NAME>_FILE` values as a Secret made with `--from-file` from `echo` gives them: the
    newline would otherwise end up in the database's name and in the hub token."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    files = {
        "DATABASE_URL": "postgres://bindery:pw@127.0.0.1:5432/bindery\n",
        "BINDERY_HUB_TOKEN": "h" * 64 + "\r\n",
        "SECRET_KEY": PRODUCTION["SECRET_KEY"] + "\n\n",
    }
    env = {k: v for k, v in PRODUCTION.items() if k not in files}
    for name, value in files.items():
        (secrets_dir / name).write_text(value)
        env[f"{name}_FILE"] = str(secrets_dir / name)
    shown = _manage(
        "shell", "-c",
        "import json; from django.conf import settings; print(json.dumps(["
        "settings.DATABASES['default']['NAME'], settings.BINDERY_HUB_TOKEN, settings.SECRET_KEY,"
        "settings.ALLOWED_HOSTS]))",
        BINDERY_VAR_DIR=str(tmp_path / "var"), **env,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    name, token, key, hosts = json.loads(shown.stdout.strip().splitlines()[-1])
    assert name == "bindery"
    assert token == "h" * 64
    assert key == PRODUCTION["SECRET_KEY"]
    assert hosts == ["bindery.example.org"]  # a variable set directly is read as before
