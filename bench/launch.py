"""Benchmark: warm launch latency through the portal API against the stock spawner.

Run with ``.venv/bin/python bench/launch.py [launches]`` (default 12) from the project
root, ideally with nothing else busy. Everything runs on 127.0.0.1 in a temporary
directory: a git server with a small repository, the portal's processes (embedded Redis,
daphne, a Celery worker, ``manage.py runhub``), and a second JupyterHub using JupyterHub's
stock ``SimpleLocalProcessSpawner``.

- Warm-up: one launch through the portal builds the environment (uv, offline from the
  shared cache — run ``bin/warm-test-cache`` first), and one launch of each kind warms the
  page cache.
- portal: ``POST /api/v1/sessions/`` with the repository URL → the session's event stream
  says ``ready`` (resolving the ref, the quota check, the build lookup, the Celery task,
  the hub, the spawner's working copy, sandbox and cgroups, the server start, the token).
  Each session is stopped before the next launch.
- stock: the same environment and checkout started directly through the hub's REST API
  (``POST /users/<u>/servers/<s>``) → its progress stream says ready.
Prints every launch, p50 and p95 of both, and the ratio of the p50s (target: portal p50
≤ 3 s on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from _common import PYTHON, ROOT, Stack, free_port, percentile, wait_until

TARGET_P50 = 3.0


def portal_launch(web: str, token: str, repo_url: str) -> tuple[float, dict[str, Any]]:
    headers = {"Authorization": f"token {token}"}
    started = time.perf_counter()
    created = requests.post(f"http://{web}/api/v1/sessions/", json={"repo_url": repo_url},
                            headers=headers, timeout=30)  # fmt: skip
    created.raise_for_status()
    session = created.json()
    with requests.get(f"http://{web}{session['links']['events']}", stream=True, timeout=120,
                      headers={**headers, "Accept": "text/event-stream"}) as stream:  # fmt: skip
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                event = json.loads(line[6:])
                if event["phase"] == "ready":
                    elapsed = time.perf_counter() - started
                    break
                if event["phase"] == "failed":
                    sys.exit(f"portal launch failed: {event['message']}")
        else:
            sys.exit("the portal's event stream ended before ready")
    return elapsed, session


def portal_stop(web: str, token: str, session: dict[str, Any]) -> None:
    headers = {"Authorization": f"token {token}"}
    url = f"http://{web}/api/v1/sessions/{session['id']}/"
    requests.delete(url, headers=headers, timeout=30).raise_for_status()
    wait_until(lambda: requests.get(url, headers=headers, timeout=5).json()["status"]
               in ("stopped", "failed"), 60, "the session to stop")  # fmt: skip


STOCK_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {api}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{root}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{root}/cookie_secret"
c.JupyterHub.pid_file = "{root}/jupyterhub.pid"
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.JupyterHub.authenticator_class = "null"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.notebook_dir = {checkout!r}
c.Spawner.default_url = "/lab"
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"],
    "scopes": ["admin:users", "admin:servers", "tokens"]}}]
"""


def stock_hub(root: Path, env_path: str, checkout: str) -> tuple[subprocess.Popen[bytes], str, str]:
    root.mkdir(parents=True)
    public, api, proxy_api = free_port(), free_port(), free_port()
    token = secrets.token_hex(32)
    config = root / "jupyterhub_config.py"
    config.write_text(STOCK_CONFIG.format(
        public=public, api=api, proxy_api=proxy_api, root=root, token=token, checkout=checkout,
        chp=str(ROOT / ".venv/bin/configurable-http-proxy"),
        singleuser=f"{env_path}/bin/jupyterhub-singleuser",
    ))  # fmt: skip
    process = subprocess.Popen(
        [PYTHON, "-m", "jupyterhub", "-f", str(config)], cwd=root, start_new_session=True,
        stdout=open(root / "hub.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    api_url = f"http://127.0.0.1:{api}/hub/api"
    wait_until(lambda: requests.get(api_url, timeout=2).ok, 90, "the stock hub")
    return process, api_url, token


def stock_launch(api_url: str, token: str, name: str) -> float:
    headers = {"Authorization": f"token {token}"}
    requests.post(f"{api_url}/users/bench", headers=headers, timeout=10)
    started = time.perf_counter()
    response = requests.post(f"{api_url}/users/bench/servers/{name}", headers=headers, timeout=60)
    if response.status_code not in (201, 202):
        sys.exit(f"stock launch refused: {response.status_code} {response.text}")
    with requests.get(f"{api_url}/users/bench/servers/{name}/progress", headers=headers,
                      stream=True, timeout=120) as stream:  # fmt: skip
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("ready"):
                    elapsed = time.perf_counter() - started
                    break
                if event.get("failed"):
                    sys.exit(f"stock launch failed: {event}")
        else:
            sys.exit("the stock progress stream ended before ready")
    requests.delete(f"{api_url}/users/bench/servers/{name}", headers=headers,
                    json={"remove": True}, timeout=60)  # fmt: skip
    wait_until(lambda: name not in requests.get(f"{api_url}/users/bench", headers=headers,
                                                timeout=5).json().get("servers", {}),
               60, "the stock server to stop")  # fmt: skip
    return elapsed


def report(label: str, times: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(times), percentile(times, 0.95)
    print(f"{label:8} p50 {p50:6.2f} s   p95 {p95:6.2f} s   "
          f"({', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip
    return p50, p95


def main() -> None:
    launches = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    from apps.repos.tests.gitserver import GitServer

    (ROOT / "var").mkdir(exist_ok=True)  # a fresh clone has none yet
    root = Path(tempfile.mkdtemp(prefix="bindery-bench-launch-", dir=ROOT / "var"))
    git = GitServer()
    repo = git.create_repo("lab/bench", {"requirements.txt": "tabulate==0.9.0\n",
                                         "index.ipynb": "{}"})  # fmt: skip
    stack = Stack(root, git.host)
    stock = None
    try:
        stack.start()
        stack.manage("shell", "-c", "from apps.accounts.models import User; "
                     "User.objects.create_user('bench', 'bench@example.org', 'x')")  # fmt: skip
        token = stack.manage("create_api_token", "bench").strip().splitlines()[-1]
        print("warming up: the first launch builds the environment …", flush=True)
        cold, session = portal_launch(stack.web, token, repo.url)
        print(f"cold launch (build + launch): {cold:.1f} s")
        detail = requests.get(
            f"http://{stack.web}/api/v1/builds/{session['build']}/",
            headers={"Authorization": f"token {token}"},
            timeout=10,
        ).json()
        portal_stop(stack.web, token, session)
        env_path = str(Path(stack.env["BINDERY_VAR_DIR"]) / "build" / "envs" /
                       detail["environment_key"])  # fmt: skip
        checkout = Path(root / "stock-checkout")
        checkouts = Path(stack.env["BINDERY_VAR_DIR"]) / "checkouts"
        source = next(p for p in checkouts.glob("*/*") if p.is_dir())
        shutil.copytree(source, checkout, ignore=shutil.ignore_patterns(".git"))
        stock, api_url, stock_token = stock_hub(root / "stock-hub", env_path, str(checkout))
        portal_stop(stack.web, token, portal_launch(stack.web, token, repo.url)[1])
        stock_launch(api_url, stock_token, "warm")

        portal_times, stock_times = [], []
        for i in range(launches):
            elapsed, session = portal_launch(stack.web, token, repo.url)
            portal_times.append(elapsed)
            portal_stop(stack.web, token, session)
            stock_times.append(stock_launch(api_url, stock_token, f"s{i}"))
            print(f"launch {i + 1:2}: portal {portal_times[-1]:.2f} s   "
                  f"stock {stock_times[-1]:.2f} s", flush=True)  # fmt: skip
        print()
        portal_p50, _ = report("portal", portal_times)
        stock_p50, _ = report("stock", stock_times)
        print(f"ratio of p50s (portal / stock): {portal_p50 / stock_p50:.2f}")
        verdict = "meets" if portal_p50 <= TARGET_P50 else "misses"
        print(f"portal warm launch p50 {portal_p50:.2f} s {verdict} the {TARGET_P50:.0f} s target")
    finally:
        if stock is not None:
            os.killpg(stock.pid, signal.SIGTERM)
            stock.wait(timeout=30)
        stack.stop()
        git.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
