"""postBuild: run in the checkout with the environment active, as the build's own uid, and
why it failed when it did.

It runs as repo2docker runs it (its runtime contract: the home is the repository, the
environment under repo2docker's names), with a temporary directory of its own on disk for
its TMPDIR and tool caches. When it fails after pointing at a JupyterLab debug log there,
the end of that log is copied into the build log: nobody else can reach the file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from apps import sandbox
from apps.builds.backends.config import BuildPlan
from apps.builds.backends.local.network import PASSED_ENV
from apps.builds.backends.local.runner import Job, clean_line, meaningful_line
from apps.builds.backends.local.steps import Steps
from portal.errors import BackendError

# JupyterLab's last words when its build failed: where its debug log (yarn's output) is
_JUPYTERLAB_DEBUG_LOG = re.compile(r"See the log file for details: (/\S+)")
_DEBUG_LOG_BYTES = 8 * 1024 * 1024  # the end of the debug log read back, at most
_DEBUG_LOG_LINES = 1000  # of which the last lines shown in the build log
_YARN_FETCHING = "YN0013:"  # yarn 2+: "… can't be found in the cache and will be fetched …"


def run_postbuild(job: Job, plan: BuildPlan, env: Path, steps: Steps) -> str:
    """Run postBuild from the checkout with ``env`` active, as the build's uid; returns
    the sandbox used. Its shebang is read inside the sandbox (``sandbox.RUN_SCRIPT``)."""
    checkout = steps.checkout
    script = str(checkout / plan.postbuild)
    sandboxed = steps.sandboxed
    # postBuild's TMPDIR and tool caches: a directory on disk of the build's own, bound into
    # the sandbox at the same path. On disk, not the sandbox's tmpfs /tmp: without swap a
    # tmpfs is memory the build's cgroup cannot reclaim (npm's and yarn's caches of a
    # JupyterLab build are hundreds of MB), and what a failed step left there (JupyterLab's
    # debug log) can still be read afterwards (_postbuild_failure). Removed afterwards
    # (shutil.rmtree follows no symlink).
    scratch = tempfile.mkdtemp(prefix="bindery-postbuild-")
    try:
        if steps.slot is not None:
            os.chown(scratch, steps.slot.uid, steps.slot.uid)
        tmp = scratch
        # repo2docker's runtime contract as the session has it (docs/architecture.md and
        # sessions/spawner.py get_env): the home is the repository, ~/.local/bin before
        # the environment's bin, the environment under repo2docker's names, npm's global
        # prefix in the environment (`npm install -g` lands on the sessions' PATH).
        variables = {
            "PATH": f"{checkout}/.local/bin:{env}/bin:{sandbox.SYSTEM_PATH}",
            "VIRTUAL_ENV": str(env),
            "NB_PYTHON_PREFIX": str(env),
            "KERNEL_PYTHON_PREFIX": str(env),
            "NPM_CONFIG_PREFIX": str(env),
            "HOME": str(checkout),  # repo2docker's REPO_DIR is the home directory
            "REPO_DIR": str(checkout),
            "USER": "jovyan",
            "NB_USER": "jovyan",
            "NB_UID": str(steps.slot.uid if steps.slot is not None else os.getuid()),
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",  # repo2docker's en_US.UTF-8 is not generated here
            "LANGUAGE": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "TMPDIR": tmp,
            "XDG_CACHE_HOME": f"{tmp}/.cache",  # yarn 1's cache, pip's, ...
            "npm_config_cache": f"{tmp}/.npm",
            # yarn 2+ (JupyterLab's jlpm) keeps a mirror of every package it fetches in
            # ~/.yarn/berry: in the home, the checkout, it would be recorded in the overlay
            # and copied into every session's working copy (~150 MB for one extension).
            "YARN_GLOBAL_FOLDER": f"{tmp}/.yarn-berry",
            **{k: v for k in PASSED_ENV if (v := os.environ.get(k))},
        }
        if sandboxed:
            job.say(f"Running {plan.postbuild} in the sandbox, as the build's own user")
        else:
            job.warn(f"{plan.postbuild} ran without a sandbox (BINDERY_SANDBOX is off).")
        status, tail = steps.run(
            sandbox.script_command(script), trusted=False, chdir=checkout,
            variables=variables, writable=(env, Path(scratch)), own_view=True,
        )  # fmt: skip
        last = _postbuild_failure(job, Path(scratch), tail) if status != 0 else ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if status != 0:
        raise BackendError(
            f"{plan.postbuild} failed with exit status {status}"
            + (f": {last[:300]}" if last else "."),
            code="POSTBUILD_FAILED",
        )
    return "bwrap" if sandboxed else "none"


def _postbuild_failure(job: Job, scratch: Path, tail: Sequence[str]) -> str:
    """Why postBuild failed, for its error message: ``meaningful_line(tail)``; but when its last
    words point at a JupyterLab debug log in its temporary directory ``scratch`` (``jupyter lab
    build`` and ``jupyter labextension install`` keep yarn's output there), the end of that log
    is copied into the build log, as nobody can reach the file, and the reason is what
    JupyterLab said before pointing at it ("RuntimeError: npm dependencies failed to install")."""
    for index in range(len(tail) - 1, -1, -1):
        found = _JUPYTERLAB_DEBUG_LOG.search(clean_line(tail[index]))
        if found:
            break
    else:
        return meaningful_line(tail)
    path = Path(os.path.normpath(found.group(1)))
    if path.parent == scratch:
        try:  # a file the build wrote: read as root without following a symlink
            data = sandbox.read_nofollow(scratch, path.name, limit=_DEBUG_LOG_BYTES, tail=True)
        except OSError:
            data = b""
        lines = [clean_line(line) for line in data.decode(errors="replace").splitlines()]
        if len(data) >= _DEBUG_LOG_BYTES:
            lines = lines[1:]  # cut mid-line
        # yarn reprints its progress: every line once, without its lines saying a package is
        # being downloaded (thousands in a JupyterLab build)
        kept = list(dict.fromkeys(t for t in lines if t and _YARN_FETCHING not in t))
        if kept:
            job.say(
                f"JupyterLab's debug log {path.name} ends (repeated lines and yarn's download "
                "progress left out):",
                stream="stderr",
            )
            for line in kept[-_DEBUG_LOG_LINES:]:
                job.say(line, stream="stderr")
    return meaningful_line(tail[:index]) or meaningful_line(tail)
