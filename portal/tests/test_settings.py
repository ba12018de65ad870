"""Production settings: fail fast without secrets, and pass `check --deploy` with no warnings."""

from __future__ import annotations

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
