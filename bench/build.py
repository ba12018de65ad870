"""Benchmark: the portal's cold build against a bare ``uv venv && uv pip install -r``, with the
shared, precompiled Jupyter base (``local/shared_base``) made once before the rounds.

Run with ``.venv/bin/python bench/build.py [rounds]`` (default 6, keep it even so each side
goes first equally often) from the project root. Bytecode compilation is CPU-bound: on a
shared machine, run it when nothing else is busy.

- Warm-up (may reach PyPI): one install of the small requirements.txt below plus the base
  packages into a throwaway environment, filling the shared uv cache
  (settings.BINDERY_UV_CACHE_DIR).
- The base: the first portal build, into an empty bases directory, makes it (installed and
  byte-compiled once); reported as "making the base" (its own step) and that build's total.
- Measured rounds run offline against that cache; the portal and bare builds alternate
  which goes first:
  - portal: ``LocalBuilder().build`` of a repository (requirements.txt with the small set)
    served by a git server on 127.0.0.1, into an empty environments directory (cold: fresh
    environment, same cache, same base). This is fetch + plan + sandbox + uv venv + uv pip
    install + linking the base's bytecode + compiling the rest + seal + bookkeeping.
  - bare without --compile-bytecode: ``uv venv`` + ``uv pip install -r requirements.txt -r
    base-requirements.txt`` (the goal: portal <= GOAL times this), in a cgroup with the
    build's limits as the portal's commands are (on a busy machine a cgroup gets one share
    of the CPU in all, a process outside one a share of its own).
  - bare with --compile-bytecode, for scale: what compiling everything costs.
  - reuse: the portal building a second commit that changes only a notebook.
  - launches: ``jupyter-server`` started from the environment just built until it accepts
    connections, twice (the first launch after the build, then a warm one), with
    PYTHONDONTWRITEBYTECODE=1 as on these machines; plus the modules compiled from source
    while importing the server (``python -v``; 0 when every pyc is there and valid).
Prints each round and the medians, and the load average before and after (the figures
are wall times: on a machine others are using, they say little).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
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

from apps import cgroups  # noqa: E402
from apps.builds.backends import disk  # noqa: E402
from apps.builds.backends.base import BuildRequest  # noqa: E402
from apps.builds.backends.local import LocalBuilder  # noqa: E402
from apps.builds.backends.local.interpreters import BASE_REQUIREMENTS_FILE, default_interpreter  # noqa: E402
from apps.builds.backends.local.uv_tool import uv_binary  # noqa: E402
from apps.repos.tests.gitserver import GitServer  # noqa: E402
from apps.repos.types import ResolvedRepo  # noqa: E402

# a small repository's own packages (in the shared test cache too: bin/warm-test-cache)
REQUIREMENTS = "tabulate==0.9.0\ntoolz==1.0.0\n"
GOAL = 1.5  # portal cold build / bare uv without bytecode
# what a server start imports (the probe counting modules compiled from source)
SERVER_IMPORTS = "import jupyter_server.serverapp, jupyterlab.labapp, ipykernel.kernelapp"


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
        command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir(),
        preexec_fn=BARE_GROUP.preexec_fn() if BARE_GROUP is not None else None,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")


# The portal's build commands run in a cgroup of the build's own (``apps.cgroups``), which
# on a busy machine gets one share of the CPU as a whole; the bare builds get one alike, so
# that the two compare (None: outside any, as before).
BARE_GROUP: cgroups.CgroupSet | None = None


def bare(target: Path, requirements: Path, *, compile_bytecode: bool = True) -> float:
    start = time.monotonic()
    uv("venv", "-q", "--python", default_interpreter().path, str(target))
    flags = ["--compile-bytecode"] if compile_bytecode else []
    uv("pip", "install", "-q", "--python", str(target / "bin" / "python"), *flags,
       "-r", str(requirements), "-r", str(BASE_REQUIREMENTS_FILE))  # fmt: skip
    return time.monotonic() - start


def portal(repo: ResolvedRepo) -> tuple[float, bool, dict[str, float], str]:
    """(seconds, reused, the build's step durations, environment path)."""
    start = time.monotonic()
    result = LocalBuilder().build(BuildRequest(build_id=1, repo=repo), lambda *a, **k: None)
    seconds = time.monotonic() - start
    return seconds, result.reused, dict(result.durations), result.environment_path


def launch(env: str, root: Path) -> float:
    """Seconds from starting ``jupyter-server`` from ``env`` until it accepts connections."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    variables = {
        "PATH": f"{env}/bin:/usr/bin:/bin", "HOME": str(root), "PYTHONDONTWRITEBYTECODE": "1",
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
    }  # fmt: skip
    argv = [f"{env}/bin/jupyter-server", "--allow-root", "--no-browser", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=bench",
            f"--ServerApp.root_dir={root}"]  # fmt: skip
    start = time.monotonic()
    process = subprocess.Popen(argv, env=variables, cwd=root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        while time.monotonic() - start < 60:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return time.monotonic() - start
            if process.poll() is not None:
                sys.exit(f"jupyter-server from {env} exited with {process.returncode}")
            time.sleep(0.02)
        sys.exit("jupyter-server did not start within 60 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and its children
        process.wait()


def compiled_at_import(env: str) -> int:
    """How many modules importing the server compiles from source (no valid pyc)."""
    done = subprocess.run(
        [f"{env}/bin/python", "-v", "-c", SERVER_IMPORTS], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/", check=True,
    )  # fmt: skip
    # importlib: "# code object from '<pyc>'" for a pyc, "# code object from <source>" else
    return sum(
        1 for line in done.stderr.splitlines()
        if line.startswith("# code object from ") and line.endswith(".py")
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def make_base(server: GitServer, builds: Path, work: Path) -> tuple[float, float]:
    """The first build into an empty bases directory: (that build's seconds, making the
    base's seconds)."""
    settings.BINDERY_BASES_DIR = builds / "bases"
    settings.BINDERY_ENVS_DIR = builds / "envs-first"
    settings.BINDERY_CHECKOUTS_DIR = work / "checkouts-first"
    repo = server.create_repo("first", {"requirements.txt": REQUIREMENTS})
    seconds, reused, durations, _ = portal(resolved(server, repo, repo.head))
    assert not reused and "base" in durations, durations
    shutil.rmtree(builds / "envs-first")
    shutil.rmtree(work / "checkouts-first")
    return seconds, durations["base"]


def measure(
    work: Path, builds: Path, requirements: Path, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], tuple[float, float]]:
    server = GitServer()
    repo = server.create_repo("bench", {"requirements.txt": REQUIREMENTS, "a.ipynb": "{}\n"})
    settings.BINDERY_ALLOWED_GIT_HOSTS = [server.host]
    settings.BINDERY_UV_OFFLINE = True
    settings.BINDERY_PACKAGE_INDEX = ""
    kinds = ("portal", "bare-nobytecode", "bare", "reuse", "launch-first", "launch-warm",
             "compiled-at-import")  # fmt: skip
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    steps: dict[str, list[float]] = {}
    try:
        print("Making the shared base (the first build)...", flush=True)
        first = make_base(server, builds, work)
        for n in range(rounds):
            settings.BINDERY_ENVS_DIR = builds / f"envs-{n}"
            settings.BINDERY_CHECKOUTS_DIR = work / f"checkouts-{n}"
            # The portal and the bare build swap places every round (on a busy machine the
            # first build of a round can run slower); the bytecode figure is for scale.
            order = ["portal", "bare-nobytecode"] if n % 2 == 0 else ["bare-nobytecode", "portal"]
            order.append("bare")
            for kind in order:
                if kind == "portal":
                    seconds, reused, durations, env = portal(resolved(server, repo, repo.head))
                    assert not reused and durations.get("base") is None, durations
                    for step, took in durations.items():
                        steps.setdefault(step, []).append(took)
                    times["launch-first"].append(launch(env, work / f"launch-{n}-1"))
                    times["launch-warm"].append(launch(env, work / f"launch-{n}-2"))
                    times["compiled-at-import"].append(compiled_at_import(env))
                    sha = server.commit(repo, {"a.ipynb": f'{{"round": {n}}}\n'})
                    again, reused, _, _ = portal(resolved(server, repo, sha))
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
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()),
                flush=True,
            )
    finally:
        server.close()
        shutil.rmtree(server.root, ignore_errors=True)
    return times, steps, first


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    work = Path(tempfile.mkdtemp(prefix="bindery-bench-", dir=settings.VAR_DIR))
    # Environments and the base beside the uv cache in BINDERY_BUILD_DIR, as the portal keeps
    # them, so the portal and the bare builds hardlink from the cache; checkouts outside.
    Path(settings.BINDERY_BUILD_DIR).mkdir(parents=True, exist_ok=True)
    builds = Path(tempfile.mkdtemp(prefix="bench-", dir=settings.BINDERY_BUILD_DIR))
    try:
        requirements = work / "requirements.txt"
        requirements.write_text(REQUIREMENTS)
        print(f"Python {default_interpreter().version}, uv cache {settings.BINDERY_UV_CACHE_DIR}")
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print("Warming the uv cache (may reach PyPI)...", flush=True)
        warm(work, requirements)
        global BARE_GROUP
        memory = disk.parse_size(str(getattr(settings, "BINDERY_BUILD_MEMORY", "4G")))
        limits = cgroups.Limits(
            memory, int(getattr(settings, "BINDERY_BUILD_MAX_PROCESSES", 512)),
            float(getattr(settings, "BINDERY_BUILD_CPU", 0)) or None,
        )  # fmt: skip
        BARE_GROUP = cgroups.create("bench-bare", limits, parent="bindery-bench")
        times, steps, (first, base) = measure(work, builds, requirements, rounds)
    finally:
        if BARE_GROUP is not None:
            BARE_GROUP.release()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(builds, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["portal"] / median["bare-nobytecode"]
    paired = statistics.geometric_mean(
        p / b for p, b in zip(times["portal"], times["bare-nobytecode"], strict=True)
    )
    print()

    def each(kind: str) -> str:
        return ", ".join(f"{t:.2f}" for t in times[kind])

    verdict = "met" if ratio <= GOAL else "MISSED"
    print(f"first build (makes the base) {first:.2f} s, of which making the base {base:.2f} s")
    print(f"portal cold build       median {median['portal']:.2f} s  ({each('portal')})")
    print(f"bare uv, no bytecode    median {median['bare-nobytecode']:.2f} s  "
          f"({each('bare-nobytecode')})")  # fmt: skip
    print(f"bare uv, bytecode       median {median['bare']:.2f} s  ({each('bare')})")
    print(
        f"ratio portal / bare uv without bytecode  {ratio:.3f} of the medians (goal <= {GOAL}: "
        f"{verdict}); {paired:.3f} round by round (geometric mean)"
    )
    print("portal steps (median s) " + ", ".join(
        f"{step} {statistics.median(v):.2f}" for step, v in steps.items() if step != "total"
    ))  # fmt: skip
    print(f"reuse (unchanged deps)  median {median['reuse']:.2f} s  ({each('reuse')})")
    print(f"first launch after it   median {median['launch-first']:.2f} s  "
          f"({each('launch-first')})")  # fmt: skip
    print(f"warm launch             median {median['launch-warm']:.2f} s  "
          f"({each('launch-warm')})")  # fmt: skip
    print(f"modules compiled while importing the server: {each('compiled-at-import')}")
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
