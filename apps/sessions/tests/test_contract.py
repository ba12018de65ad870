"""The signed launch contract is a pure module: the web and the worker sign launches without
loading JupyterHub (or KubeSpawner, or the kubernetes client for the local backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, os, sys
import django
django.setup()
from apps.sessions import services, tasks  # what the web and the worker load
from apps.sessions.backends import get_session_backend
from apps.sessions.backends.base import ServerSpec
signed = get_session_backend().launch_options(
    ServerSpec(session_id=1, hub_user="ann", server_name="s1", environment="/envs/x")
)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"signed": sorted(signed), "loaded": loaded}))
"""


def test_signing_a_launch_loads_neither_jupyterhub_nor_a_spawner(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
           "BINDERY_VAR_DIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["signed"] == ["payload", "signature"]  # control: a launch was signed
    assert "django" in result["loaded"]  # control: the probe sees what was imported
    for module in ("jupyterhub", "kubespawner", "tornado", "traitlets"):
        assert module not in result["loaded"], module
