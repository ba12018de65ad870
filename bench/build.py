"""Benchmark: the portal's cold build against a bare ``uv venv && uv pip install -r``.

Run with ``.venv/bin/python bench/build.py [rounds]`` (default 6, keep it even so each side
goes first equally often) from the project root. Bytecode compilation dominates both cold
builds and is CPU-bound: on a shared machine, run it when nothing else is busy.

- Warm-up (may reach PyPI): one install of the pinned set below plus the base packages into
  a throwaway environment, filling the shared uv cache (settings.BINDERY_UV_CACHE_DIR).
- Measured rounds run offline against that cache; the portal and bare builds alternate
  which goes first:
  - portal: ``LocalBuilder().build`` of a repository (requirements.txt with the pinned set)
    served by a git server on 127.0.0.1, into an empty environments directory (cold: fresh
    environment, same cache). This is fetch + plan + uv venv + uv pip install
    --compile-bytecode of requirements.txt and the base packages + bookkeeping.
  - bare: ``uv venv`` + ``uv pip install --compile-bytecode -r requirements.txt -r
    base-requirements.txt``: the same package set and flags, the same cache.
  - bare without --compile-bytecode, for scale: what bytecode compilation costs.
  - reuse: the portal building a second commit that changes only a notebook.
Prints each round and the medians, and the ratio portal / bare (goal: at most 1.15).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from apps.builds.backends.base import BuildRequest  # noqa: E402
from apps.builds.backends.local import LocalBuilder  # noqa: E402
from apps.builds.backends.local.interpreters import BASE_REQUIREMENTS_FILE, default_interpreter  # noqa: E402
from apps.builds.backends.local.uv_tool import uv_binary  # noqa: E402
from apps.repos.tests.gitserver import GitServer  # noqa: E402
from apps.repos.types import ResolvedRepo  # noqa: E402

REQUIREMENTS = "numpy==2.4.6\npandas==3.1.1\nmatplotlib==3.11.2\nscipy==1.17.1\n"
GOAL = 1.15


def uv(*args: str, offline: bool = True) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "UV_CACHE_DIR": str(settings.BINDERY_UV_CACHE_DIR),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
        "UV_NO_PROGRESS": "1",
        **{k: v for k, v in os.environ.items() if k.startswith("SSL_CERT") or "PROXY" in k.upper()},
    }
    command = [uv_binary(), *args]
    if offline and args[0] == "pip":
        command.append("--offline")
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")


def bare(target: Path, requirements: Path, *, compile_bytecode: bool = True) -> float:
    start = time.monotonic()
    uv("venv", "-q", "--python", default_interpreter().path, str(target))
    flags = ["--compile-bytecode"] if compile_bytecode else []
    uv("pip", "install", "-q", "--python", str(target / "bin" / "python"), *flags,
       "-r", str(requirements), "-r", str(BASE_REQUIREMENTS_FILE))  # fmt: skip
    return time.monotonic() - start


def portal(repo: ResolvedRepo) -> tuple[float, bool, float]:
    """(seconds, reused, seconds outside uv: fetch, plan, bookkeeping)."""
    start = time.monotonic()
    result = LocalBuilder().build(BuildRequest(build_id=1, repo=repo), lambda *a, **k: None)
    seconds = time.monotonic() - start
    in_uv = result.durations.get("venv", 0.0) + result.durations.get("install", 0.0)
    return seconds, result.reused, seconds - in_uv


def resolved(server: GitServer, repo: object, sha: str) -> ResolvedRepo:
    url = repo.url  # type: ignore[attr-defined]
    return ResolvedRepo(
        provider="git", spec=url, kind="git", repo_url=url, unresolved_ref="main",
        resolved_ref=sha, persistent_spec=f"git/{url}/{sha}", ref_url=url,
        host=server.host, display_name="bench",
    )  # fmt: skip


def warm(work: Path, requirements: Path) -> None:
    """Fill the shared uv cache with everything the rounds install (may reach PyPI)."""
    target = work / "warm"
    uv("venv", "-q", "--python", default_interpreter().path, str(target))
    uv("pip", "install", "-q", "--compile-bytecode", "--python", str(target / "bin/python"),
       "-r", str(requirements), "-r", str(BASE_REQUIREMENTS_FILE), offline=False)  # fmt: skip
    shutil.rmtree(target)


def measure(
    work: Path, builds: Path, requirements: Path, rounds: int
) -> tuple[dict[str, list[float]], list[float]]:
    server = GitServer()
    repo = server.create_repo("bench", {"requirements.txt": REQUIREMENTS, "a.ipynb": "{}\n"})
    settings.BINDERY_ALLOWED_GIT_HOSTS = [server.host]
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    times: dict[str, list[float]] = {"portal": [], "bare": [], "bare-nobytecode": [], "reuse": []}
    overheads: list[float] = []
    try:
        for n in range(rounds):
            settings.BINDERY_ENVS_DIR = builds / f"envs-{n}"
            settings.BINDERY_CHECKOUTS_DIR = work / f"checkouts-{n}"
            # The portal and the bare build swap places every round (on a busy machine the
            # first build of a round can run slower); the no-bytecode figure is for scale.
            order = ["portal", "bare"] if n % 2 == 0 else ["bare", "portal"]
            order.append("bare-nobytecode")
            for kind in order:
                if kind == "portal":
                    seconds, reused, overhead = portal(resolved(server, repo, repo.head))
                    assert not reused
                    overheads.append(overhead)
                    sha = server.commit(repo, {"a.ipynb": f'{{"round": {n}}}\n'})
                    again, reused, _ = portal(resolved(server, repo, sha))
                    assert reused
                    times["reuse"].append(again)
                else:
                    target = builds / f"{kind}-{n}"
                    seconds = bare(target, requirements, compile_bytecode=kind == "bare")
                    shutil.rmtree(target)
                times[kind].append(seconds)
            shutil.rmtree(builds / f"envs-{n}")
            shutil.rmtree(work / f"checkouts-{n}")
            print(
                f"round {n + 1} ({' → '.join(order)}): "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                flush=True,
            )
    finally:
        server.close()
        shutil.rmtree(server.root, ignore_errors=True)
    return times, overheads


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    work = Path(tempfile.mkdtemp(prefix="bindery-bench-", dir=settings.VAR_DIR))
    # Environments beside the uv cache in BINDERY_BUILD_DIR, as the portal keeps them, so
    # both the portal and the bare builds hardlink from the cache; checkouts stay outside.
    Path(settings.BINDERY_BUILD_DIR).mkdir(parents=True, exist_ok=True)
    builds = Path(tempfile.mkdtemp(prefix="bench-", dir=settings.BINDERY_BUILD_DIR))
    try:
        requirements = work / "requirements.txt"
        requirements.write_text(REQUIREMENTS)
        print(f"Python {default_interpreter().version}, uv cache {settings.BINDERY_UV_CACHE_DIR}")
        print("Warming the uv cache (may reach PyPI)...", flush=True)
        warm(work, requirements)
        times, overheads = measure(work, builds, requirements, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(builds, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["portal"] / median["bare"]
    paired = statistics.geometric_mean(
        p / b for p, b in zip(times["portal"], times["bare"], strict=True)
    )
    print()

    def each(kind: str) -> str:
        return ", ".join(f"{t:.2f}" for t in times[kind])

    verdict = "met" if ratio <= GOAL else "MISSED"
    print(f"portal cold build       median {median['portal']:.2f} s  ({each('portal')})")
    print(f"bare uv (same flags)    median {median['bare']:.2f} s  ({each('bare')})")
    print(f"bare uv, no bytecode    median {median['bare-nobytecode']:.2f} s")
    print(
        f"ratio portal / bare     {ratio:.3f} of the medians (goal <= {GOAL}: {verdict}); "
        f"{paired:.3f} round by round (geometric mean)"
    )
    print(f"portal time outside uv  median {statistics.median(overheads):.2f} s")
    print(f"reuse (unchanged deps)  median {median['reuse']:.2f} s  ({each('reuse')})")


if __name__ == "__main__":
    main()
