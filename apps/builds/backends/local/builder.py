"""The local builder: a git checkout and a uv virtualenv on this machine.

``LocalBuilder.build`` does, in order:

1. **Reuse a complete checkout** of the same repository and commit when its environment
   is still ready: nothing is fetched or installed.
2. **Fetch** the commit into a temporary directory (``apps.repos.fetch.fetch``).
3. **Plan**: read the repo2docker configuration (``config.read_plan``) and choose the
   interpreter (``runtime.txt`` & co. are honoured when that Python is on this machine and
   new enough for the Jupyter packages, otherwise the default one with a warning) and its
   base set (``base-requirements-X.Y.txt`` for a minor the newest Jupyter packages no longer
   support, else ``base-requirements.txt``).
4. **Key** the environment: a hash of the files that shape it (requirements, Pipfile,
   environment.yml, runtime.txt, postBuild...), the Python version, the base packages
   and ``BUILDER_VERSION``, not the commit. When the repository itself is installed
   (setup.py, pyproject.toml, ``-e .``) every file of the commit but notebooks counts,
   since its code is copied into the environment. A build that used a credential is
   also keyed by its repository, so a private repository's environment (and its
   postBuild output) is never handed to another repository.
5. Under an flock on the key: **reuse** the ready environment, or **build** it: ``uv
   venv``, one ``uv pip install --compile-bytecode`` of the repository's requirements
   plus the base packages it does not name itself, then postBuild in the checkout with
   the environment active. uv and postBuild both run in bubblewrap when available
   (see "Sandboxes" below).
   (``steps``, ``network``).
6. **Publish** the checkout (atomic rename) and mark both as used.

Making the environment itself is ``environment.build_environment``; replaying postBuild's
output onto a later commit that reuses it, ``overlay.apply_overlay``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from apps.builds.backends import disk, progress, store
from apps.builds.backends.base import BuildRequest, BuildResult, LogSink
from apps.builds.backends.config import BuildPlan, read_plan
from apps.builds.backends.local.environment import BUILDER_VERSION, build_environment
from apps.builds.backends.local.interpreters import (
    Interpreter,
    base_requirements_file,
    choose_interpreter,
    read_base_requirements,
)
from apps.builds.backends.local.network import build_network
from apps.builds.backends.local.overlay import apply_overlay
from apps.builds.backends.local.runner import Job
from apps.builds.backends.local.steps import sandbox_mode
from apps.repos.fetch import fetch
from apps.repos.git import run_git
from portal.errors import BackendError

log = logging.getLogger(__name__)

_PROGRESS = re.compile(r"\b\d{1,3}% \(\d+/\d+\)")
# The steps the last line of a build names, with how long each took (job.durations' keys).
_SUMMARY_STEPS = (
    ("lock_wait", "waiting for another build"), ("fetch", "fetching"),
    ("install", "installing packages"),
    ("base", "preparing the shared Jupyter packages"), ("bytecode", "compiling bytecode"),
    ("postbuild", "postBuild"),
)  # fmt: skip


class LocalBuilder:
    """Builds environments on this machine with uv. See the module docstring."""

    def __init__(self, base_requirements: Sequence[str] | None = None) -> None:
        # Given (tests, benchmarks): that set for every Python. Otherwise each interpreter's
        # own (``base_requirements_file``).
        self.base_requirements = tuple(base_requirements) if base_requirements is not None else None

    # -- the Builder protocol ------------------------------------------------------------

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult:
        """Build (or reuse) the environment for ``request``.

        Returns a BuildResult with every field set. Raises BackendError: the codes of
        ``config.read_plan`` and ``apps.repos.fetch.fetch``, BUILD_TIMEOUT,
        BUILD_CANCELLED, INSTALL_FAILED (transient when the index could not be reached),
        ENVIRONMENT_FAILED, POSTBUILD_FAILED, SANDBOX_UNAVAILABLE (transient). Safe to
        call twice: the second call reuses what the first made; calls for the same
        environment key at once produce one environment.
        """
        job = Job(request, log)
        repo = request.repo
        checkout = store.checkouts_dir() / repo.slug / repo.resolved_ref
        scope = self._scope(request)
        job.check()

        reused = self._reuse_checkout(job, checkout, scope)
        if reused is not None:
            return reused

        tmp = checkout.with_name(f".tmp-{repo.resolved_ref[:12]}-{secrets.token_hex(4)}")
        try:
            with job.timed("fetch"):
                self._fetch(job, tmp)
            with job.timed("plan"):
                job.say("Reading the repository's configuration")
                plan = read_plan(tmp)
                interpreter, notes = choose_interpreter(plan)
                key = self.environment_key(plan, tmp, interpreter, scope)
            self._describe(job, plan, interpreter, key)
            for note in (*plan.warnings, *notes):
                job.warn(note)
            record, built = self._environment(job, key, plan, interpreter, tmp)
            with job.timed("checkout"):
                checkout_path = self._publish(job, tmp, checkout, key, plan)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self._finish(job, key, record, checkout_path, plan, reused=not built)

    def mark_used(self, result: BuildResult) -> None:
        disk.mark_used(result)

    def environment_exists(self, result: BuildResult) -> bool:
        """Whether the result's environment is still ready and its checkout still there."""
        env = Path(result.environment_path)
        checkout = Path(result.checkout_path)
        return (
            store.read_json(env.with_name(f"{env.name}.json")) is not None
            and (env / "pyvenv.cfg").is_file()
            and checkout.is_dir()
            and store.checkout_record_path(checkout).is_file()
        )

    # -- keys ----------------------------------------------------------------------------

    def base_set(self, interpreter: Interpreter) -> tuple[str, tuple[str, ...]]:
        """(name, lines): the base set for ``interpreter``, named by its file ("given" when
        the builder was made with one)."""
        if self.base_requirements is not None:
            return "given", self.base_requirements
        path = base_requirements_file(interpreter.minor)
        return path.name, read_base_requirements(path)

    def base_lines(self, plan: BuildPlan, interpreter: Interpreter) -> list[str]:
        """The base packages to add: those the repository does not name itself."""
        lines = []
        for line in self.base_set(interpreter)[1]:
            try:
                name: str = canonicalize_name(Requirement(line).name)
            except InvalidRequirement:
                name = ""
            if name not in plan.requirement_names:
                lines.append(line)
        return lines

    def environment_key(
        self, plan: BuildPlan, checkout: Path, interpreter: Interpreter, scope: str = ""
    ) -> str:
        """The environment's key: a hash of everything that shapes it, not the commit."""
        files = {}
        for rel in plan.dependency_files:
            path = checkout / rel
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        material = {
            "builder": BUILDER_VERSION,
            "python": interpreter.version,
            "base_set": self.base_set(interpreter)[0],
            "base": self.base_lines(plan, interpreter),
            "index": settings.BINDERY_PACKAGE_INDEX,
            "requirements": plan.requirements,
            "conda": plan.conda_packages,
            "files": files,
            "tree": _tree_digest(checkout) if plan.installs_repository else "",
            "scope": scope,
        }
        blob = json.dumps(material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    @staticmethod
    def _scope(request: BuildRequest) -> str:
        used = getattr(request.repo, "is_private", False) or any(
            c.host == request.repo.host for c in request.credentials
        )
        return f"{request.repo.provider}:{request.repo.repo_url}" if used else ""

    # -- steps ---------------------------------------------------------------------------

    def _reuse_checkout(self, job: Job, checkout: Path, scope: str) -> BuildResult | None:
        """A result from a complete checkout of this commit whose environment is ready."""
        record = store.read_json(store.checkout_record_path(checkout))
        if record is None or not checkout.is_dir():
            return None
        try:
            plan = read_plan(checkout)
            interpreter, _ = choose_interpreter(plan)
            key = self.environment_key(plan, checkout, interpreter, scope)
        except (BackendError, OSError):
            return None
        if key != record.get("environment_key"):
            return None
        with store.flock(store.env_lock_path(key), cancel=job.cancel, check=job.check):
            env_record = store.env_record(key)
            if env_record is None:
                return None
            job.say(
                f"Reusing the checkout of {job.request.repo.resolved_ref[:12]}", phase="fetching"
            )
            store.touch(store.checkout_record_path(checkout))
            store.touch(store.env_record_path(key))
        for note in record.get("warnings", []):
            job.warn(note)
        return self._finish(job, key, env_record, checkout, plan, reused=True)

    def _fetch(self, job: Job, dest: Path) -> None:
        """``fetch`` in a thread, its lines logged from this one (log sinks need not be
        thread-safe), its timeout the build's."""
        request = job.request
        lines: queue.Queue[str] = queue.Queue()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                fetch(
                    request.repo, dest, credentials=request.credentials, log=lines.put,
                    timeout=max(1.0, job.remaining()), cancel=job.cancel,
                )  # fmt: skip
            except BaseException as exc:
                failure.append(exc)

        dest.parent.mkdir(parents=True, exist_ok=True)
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while worker.is_alive() or not lines.empty():
            with suppress(queue.Empty):
                line = lines.get(timeout=0.1)
                # git's progress counters update in place; keep each counter's last state
                if not _PROGRESS.search(line) or line.rstrip().endswith("done."):
                    job.say(line, phase="fetching")
        if failure:
            exc = failure[0]
            if isinstance(exc, BackendError) and exc.code == "GIT_TIMEOUT":
                job.check()
            raise exc
        job.check()

    def _describe(self, job: Job, plan: BuildPlan, interpreter: Interpreter, key: str) -> None:
        where = f"{plan.config_dir}/" if plan.config_dir else "the repository root"
        files = ", ".join(plan.config_files) or "none (only the base packages)"
        job.say(f"Configuration from {where}: {files}")
        job.say(f"Python {interpreter.version}")
        name, lines = self.base_set(interpreter)
        job.say(f"Base packages: {', '.join(lines)}")
        # Host paths and the key are for operators, not the build log: the key is on the
        # build's receipt once it is ready, the interpreter and base set in the
        # environment's record (store.env_record_path).
        log.info(
            "build %s: environment %s, Python %s (%s), base set %s",
            job.request.build_id, key, interpreter.version, interpreter.path, name,
        )  # fmt: skip

    def _environment(
        self, job: Job, key: str, plan: BuildPlan, interpreter: Interpreter, checkout: Path
    ) -> tuple[dict[str, Any], bool]:
        """(record, built): reuse the ready environment ``key`` or build it, under its lock."""
        lock_started = time.monotonic()

        def waiting() -> None:
            job.say("Waiting for another build of the same environment to finish")

        with store.flock(
            store.env_lock_path(key), cancel=job.cancel, check=job.check, on_wait=waiting
        ):
            job.durations["lock_wait"] = round(time.monotonic() - lock_started, 3)
            record = store.env_record(key)
            if record is not None:
                job.say("The environment is ready: reusing it, nothing to install")
                with job.timed("reuse"):
                    apply_overlay(job, key, record, checkout)
                store.touch(store.env_record_path(key))
                return record, False
            env = store.env_path(key)
            try:
                network = build_network(job, sandboxed=sandbox_mode() == "bwrap")
                with network.isolation(job) as isolation:
                    record = build_environment(
                        job, key, env, plan, interpreter, checkout, isolation,
                        base_set=self.base_set(interpreter),
                        base=self.base_lines(plan, interpreter),
                    )  # fmt: skip
            except BaseException:
                store.env_record_path(key).unlink(missing_ok=True)
                shutil.rmtree(env, ignore_errors=True)
                raise
            return record, True

    def _publish(self, job: Job, tmp: Path, checkout: Path, key: str, plan: BuildPlan) -> Path:
        """Move the prepared checkout into place (atomic rename) and record it."""
        record = {
            "environment_key": key,
            "repo": job.request.repo.repo_url,
            "commit": job.request.repo.resolved_ref,
            "start_script": plan.start,
            "config_files": list(plan.config_files),
            "warnings": list(job.warnings),
            "created": datetime.now(UTC).isoformat(),
        }
        record_path = store.checkout_record_path(checkout)
        with store.flock(store.checkout_lock_path(checkout), cancel=job.cancel, check=job.check):
            existing = store.read_json(record_path)
            if checkout.exists():
                if existing is not None and existing.get("environment_key") == key:
                    job.say("Another build already put this commit's checkout in place")
                    store.touch(record_path)
                    return checkout
                # An older checkout of this commit (its environment was pruned and rebuilt,
                # or a build was killed before recording it): replace it.
                record_path.unlink(missing_ok=True)
                trash = checkout.with_name(f".trash-{checkout.name}-{secrets.token_hex(4)}")
                os.rename(checkout, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, checkout)
            store.write_json(record_path, record)
        return checkout

    def _finish(
        self,
        job: Job,
        key: str,
        env_record: dict[str, Any],
        checkout: Path,
        plan: BuildPlan,
        *,
        reused: bool,
    ) -> BuildResult:
        for note in env_record.get("warnings", []):
            if reused:
                job.warn(note)
        job.durations["total"] = round(time.monotonic() - job.started, 3)
        packages = tuple(sorted((str(n), str(v)) for n, v in env_record.get("packages", [])))
        job.say(_summary(job.durations, reused=reused), phase="built")
        return BuildResult(
            environment_key=key,
            environment_path=str(store.env_path(key)),
            checkout_path=str(checkout),
            python_version=str(env_record.get("python_version", "")),
            config_files=plan.config_files,
            packages=packages,
            warnings=tuple(job.warnings),
            reused=reused,
            start_script=plan.start,
            durations=dict(job.durations),
        )


def _summary(durations: dict[str, float], *, reused: bool) -> str:
    """The build's last line: ``Built in 14.2 s (fetching 0.3 s, installing packages
    9.8 s, …)``, or that it installed nothing."""
    total = progress.seconds(durations.get("total", 0.0))
    if reused:
        return f"Done in {total}: the environment was reused, nothing was installed"
    steps = [
        f"{label} {progress.seconds(durations[name])}"
        for name, label in _SUMMARY_STEPS
        if durations.get(name, 0.0) >= 0.1
    ]
    return f"Built in {total}" + (f" ({', '.join(steps)})" if steps else "")


def _tree_digest(checkout: Path) -> str:
    """Every file of the commit but notebooks: what a package install can copy."""
    if (checkout / ".git").exists():
        listing = run_git(["-C", str(checkout), "ls-tree", "-r", "-z", "--full-tree", "HEAD"])
        entries = sorted(e for e in listing.split("\0") if e and not e.endswith(".ipynb"))
        return hashlib.sha256("\0".join(entries).encode()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(checkout.rglob("*")):
        if path.is_file() and path.suffix != ".ipynb":
            digest.update(str(path.relative_to(checkout)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
