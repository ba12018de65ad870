"""Making one environment: ``uv venv``, one ``uv pip install``, its bytecode, postBuild,
the seal and the ready record.

The install is one ``uv pip install`` of the repository's requirements plus the base
packages it does not name itself (``interpreters``) and environment.yml's conda packages
that the package index has under the same name. Sandboxed (``steps``), it is first tried
with wheels only, as the cache's owner, hardlinked from the shared cache; when something
must be built from source, the environment is made again and installed as the build's own
uid from the build's farm of the cache (with ``--compile-bytecode``). Otherwise, before
the build's uid gets the environment, the bytecode of the files it shares with the shared
base of its Python (``shared_base``: the Jupyter packages, compiled once) is linked in, and
``compileall`` compiles the rest as the build's uid (as root without a sandbox).
Then postBuild runs in the checkout with the environment active (``postbuild``), the
environment and the checkout are sealed, what postBuild wrote is recorded (``overlay``),
and the ready record is written last: an environment with a record is ready.

``rfc3987-syntax`` is left out of every environment unless the repository asks for it
(``uv pip install --excludes``: it is never installed, so no step removes it afterwards):
jsonschema imports it only to check the "iri" formats and does without it, and its import
costs about 1.7 s at every server start (FIELD-NOTES).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from apps import cgroups, sandbox
from apps.builds.backends import disk, progress, sandboxing, store
from apps.builds.backends.config import BuildPlan
from apps.builds.backends.local import bytecode, ownership, shared_base
from apps.builds.backends.local.interpreters import Interpreter
from apps.builds.backends.local.network import Isolation
from apps.builds.backends.local.overlay import record_overlay, signatures
from apps.builds.backends.local.postbuild import run_postbuild
from apps.builds.backends.local.runner import Job
from apps.builds.backends.local.steps import Steps, make_steps, sandbox_mode
from apps.builds.backends.local.uv_tool import TRANSIENT, fail, index_args, uv_binary

# What is left to compile after the shared base's bytecode was linked (``_share_base``).
COMPILE_LIST = ".bindery/compile.list"
BUILDER_VERSION = "2"  # 2: sandboxed as unprivileged uids, sealed environments
# Left out of the install unless the repository names them (see the module docstring).
DROPPED_PACKAGES = ("rfc3987-syntax",)
# JupyterLab asks every new user whether to fetch news from the internet and checks for
# updates; neither makes sense in a managed environment. Defaults, not locks: a user can
# still turn them on in the settings editor.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    }
}


def build_environment(
    job: Job,
    key: str,
    env: Path,
    plan: BuildPlan,
    interpreter: Interpreter,
    checkout: Path,
    isolation: Isolation | None,
    *,
    base_set: tuple[str, tuple[str, ...]],
    base: Sequence[str],
) -> dict[str, Any]:
    """Build the environment, every sandboxed command in ``isolation`` (None: the
    host's network). Sandboxed, the trusted steps run as the cache's owner and the rest
    as a build uid of its own (``sandboxing``); the environment is sealed before its
    ready record is written."""
    if env.exists():
        job.say("Removing an unfinished environment left by an interrupted build")
        shutil.rmtree(env)
    sandboxed = sandbox_mode() == "bwrap"
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    slot_context = sandboxing.build_slot(cache) if sandboxed else nullcontext(None)
    with (
        tempfile.TemporaryDirectory(prefix="bindery-uv-home-") as home,
        slot_context as slot,
        _cgroups(job, slot) as limits,
    ):
        steps = make_steps(job, plan, interpreter, env, checkout, home, isolation, slot)
        steps = dataclasses.replace(steps, limits=limits)
        for line in base_set[1]:
            if line not in base:
                job.say(f"Base package {line}: the repository's own requirement is used")
        if slot is not None:
            with job.timed("sandbox"):
                ownership.own_cache(cache, store.envs_dir())
                sandboxing.give_checkout(checkout, slot.uid)
        skipped: list[str] = []
        conda: list[str] = []
        built_from_source = False
        shared, linked = "", 0
        _venv(steps, env, trusted=True)
        if plan.conda_packages:
            with job.timed("conda_check"):
                conda, skipped = _check_conda(job, plan, interpreter, steps)
        skip_warning = (
            "environment.yml: skipped conda packages not found on the package index "
            f"under the same name: {', '.join(skipped)}."
        )
        if skipped:
            job.warn(skip_warning)
        requirements = [_absolute(line, checkout) for line in plan.requirements]
        wanted = "\n".join([*requirements, *conda, *base]) + "\n"
        excluded = [name for name in DROPPED_PACKAGES if name not in plan.requirement_names]
        if excluded:
            job.say(f"Leaving out {', '.join(excluded)}: Jupyter works without it, and "
                    "importing it would slow down every server start")  # fmt: skip
        job.say("Installing packages with uv")
        with job.timed("install"):
            if slot is not None:
                built_from_source = not _install_wheels(job, steps, env, wanted, excluded)
                if built_from_source:
                    farm = sandboxing.make_farm(cache, slot)
                    _venv(steps, env, trusted=False)
                    _uv(job, steps, ["pip", "install", "--python", str(env / "bin" /
                        "python"), "--compile-bytecode", *index_args(),
                        *_write_requirements(env, wanted, excluded)], "INSTALL_FAILED",
                        trusted=False, variables={"UV_CACHE_DIR": str(farm),
                        "UV_LINK_MODE": "copy"}, env=env)  # fmt: skip
            else:
                _uv(job, steps, ["pip", "install", "--python", str(env / "bin" / "python"),
                                 *index_args(), *_write_requirements(env, wanted, excluded)],
                    "INSTALL_FAILED", trusted=True, env=env)  # fmt: skip
        if not built_from_source:
            # before the build's uid gets the environment: nothing untrusted has run in it
            shared, linked = _share_base(steps, env, base_set[1])
            if slot is not None:
                ownership.hand_over(env, slot.uid)
        if not built_from_source:
            with job.timed("bytecode"):
                _compile(job, steps, env)
        _quiet_jupyterlab(env)
        overlay: list[dict[str, str]] = []
        postbuild_sandbox = ""
        before = None
        if plan.postbuild:
            with job.timed("postbuild"):
                before = None if (checkout / ".git").exists() else signatures(checkout)
                postbuild_sandbox = run_postbuild(job, plan, env, steps)
        if slot is not None:
            # the build's processes are gone: nothing can change these trees any more
            with job.timed("seal"):
                sandbox.seal_tree(env, keep_owner=sandboxing.ids().cache)
                sandbox.seal_tree(checkout)
        if plan.postbuild:
            with job.timed("postbuild"):
                overlay = record_overlay(job, checkout, store.overlay_path(key), before)
        job.check()
    record: dict[str, Any] = {
        "key": key,
        "builder_version": BUILDER_VERSION,
        "python_version": interpreter.version,
        "python": interpreter.path,
        "base_set": base_set[0],
        "packages": sandboxing.packages(env),
        "warnings": [skip_warning] if skipped else [],
        "skipped_conda_packages": skipped,
        "overlay": overlay,
        "sandbox": postbuild_sandbox,
        "uv_sandbox": "bwrap" if steps.sandboxed else "none",
        "uv_link_mode": "copy" if built_from_source else steps.variables.get(
            "UV_LINK_MODE", "hardlink"),
        "built_from_source": built_from_source,
        "shared_base": shared,
        "bytecode_linked": linked,
        "network": "isolated" if isolation is not None else "shared",
        "created": datetime.now(UTC).isoformat(),
        "built_from": f"{job.request.repo.repo_url}@{job.request.repo.resolved_ref}",
        "durations": dict(job.durations),
    }  # fmt: skip
    store.write_json(store.env_record_path(key), record)  # the environment is ready
    return record


@contextmanager
def _cgroups(job: Job, slot: sandboxing.Slot | None) -> Iterator[Callable[[], None] | None]:
    """The build's memory, process and CPU limits (``apps.cgroups``) while the block
    runs: what its commands join before they exec. None without a sandbox."""
    if slot is None:
        yield None
        return
    memory = disk.parse_size(str(getattr(settings, "BINDERY_BUILD_MEMORY", "4G")))
    limits = cgroups.Limits(
        memory, int(getattr(settings, "BINDERY_BUILD_MAX_PROCESSES", 512)),
        float(getattr(settings, "BINDERY_BUILD_CPU", 0)) or None,
    )  # fmt: skip
    installation = hashlib.sha256(str(settings.BINDERY_BUILD_DIR).encode()).hexdigest()[:8]
    group = cgroups.create(
        cgroups.safe_name("build", str(slot.number)), limits,
        parent=f"bindery-builds-{installation}",
    )  # fmt: skip
    job.say(f"Build limits: {group.describe()}")
    try:
        yield group.preexec_fn()
    finally:
        group.release()


def _venv(steps: Steps, env: Path, *, trusted: bool) -> None:
    """A fresh virtualenv at ``env``, the owner of the step that makes it."""
    if steps.slot is not None:
        owner = sandboxing.ids().cache if trusted else steps.slot.uid
        sandboxing.new_environment(env, owner)
    with steps.job.timed("venv"):
        _uv(steps.job, steps, ["venv", "--no-project", "--allow-existing", "--python",
                               steps.interpreter.path, str(env)],
            "ENVIRONMENT_FAILED", trusted=trusted, env=env)  # fmt: skip


def _write_requirements(env: Path, wanted: str, excluded: Sequence[str]) -> list[str]:
    """Write what to install, and what to leave out, into ``env/.bindery``; return uv's
    arguments naming them."""
    sandbox.write_nofollow(env, ".bindery/requirements.in", wanted.encode())
    args = ["-r", str(env / ".bindery" / "requirements.in")]
    if excluded:
        sandbox.write_nofollow(
            env, ".bindery/excludes.txt", "".join(f"{n}\n" for n in excluded).encode()
        )
        args += ["--excludes", str(env / ".bindery" / "excludes.txt")]
    return args


def _install_wheels(
    job: Job, steps: Steps, env: Path, wanted: str, excluded: Sequence[str]
) -> bool:
    """The trusted install: wheels only (``--no-build``: nothing from a package runs),
    as the cache's owner, hardlinked from the shared cache. False when something must
    be built from source (the caller then builds as the build's uid)."""
    args = ["pip", "install", "--python", str(env / "bin" / "python"), "--no-build",
            *index_args(), *_write_requirements(env, wanted, excluded)]  # fmt: skip
    # uv's error, when it fails, is held back: the install from source says it again if
    # it is still one, and a transient one becomes the build's error
    reader = progress.UvOutput(_places(steps, env), hold_errors=True)
    status, tail = steps.run([uv_binary(), *args], trusted=True, output=reader)
    if status == 0:
        return True
    tail = [*tail, *reader.held][-40:]
    text = "\n".join(tail)
    if any(marker in text for marker in TRANSIENT):
        fail(tail, "INSTALL_FAILED")
    job.say(
        "Not every package could be installed from a wheel: installing again, building "
        "from source as the build's own unprivileged user, with the shared cache read-only"
    )
    return False


def _share_base(steps: Steps, env: Path, lines: Sequence[str]) -> tuple[str, int]:
    """(the shared base's name, how many pycs were linked from it): the base's bytecode for
    the files ``env`` shares with it (``shared_base``), the base made first if need be, and
    the list of what is left to compile (COMPILE_LIST); ("", 0) when there is none to
    share. Run as root before untrusted code runs in ``env``."""
    job = steps.job
    if not shared_base.wanted(steps, env):
        return "", 0
    base = shared_base.ensure_base(steps, lines, lambda path: _places(steps, path))
    if base is None:
        return "", 0
    with job.timed("link"):
        linked = shared_base.link_bytecode(env, base, steps.interpreter)
        if linked.unlinked is not None:
            sandbox.write_nofollow(env, COMPILE_LIST, "\0".join(linked.unlinked).encode())
    if linked.count:
        job.say(f"Bytecode of the Jupyter packages shared with other environments: "
                f"{linked.count:,} files")  # fmt: skip
    return base.name, linked.count


def _compile(job: Job, steps: Steps, env: Path) -> None:
    """Byte-compile the environment's packages that have no valid pyc yet (``bytecode``) as
    the build's uid (compiling runs the environment's interpreter, and so any ``.pth`` file
    a wheel shipped)."""
    sites = [str(p) for p in sorted(env.glob("lib/python*/site-packages"))]
    places = _places(steps, env, *((site, "") for site in sites))
    only = env / COMPILE_LIST
    # written by root before the build's uid had the environment; only the build's own
    # compile step reads it
    try:  # not following what the build's uid may have put at .bindery since
        listed = stat.S_ISREG(sandbox.lstat_nofollow(env, COMPILE_LIST).st_mode)
    except OSError:
        listed = False
    bytecode.compile_environment(job, steps, env, sites, places, only if listed else None)


def _check_conda(
    job: Job, plan: BuildPlan, interpreter: Interpreter, steps: Steps
) -> tuple[list[str], list[str]]:
    """Split environment.yml's conda packages into (found on the index, skipped).

    Each is resolved alone, without dependencies (``uv pip compile --no-deps``), as a
    trusted step (``--no-build``: a package only published as source counts as not
    found): offline that asks the uv cache, otherwise the configured index (PyPI by
    default).
    """
    job.say(f"Looking up {len(plan.conda_packages)} conda packages on the package index")
    no_build = ["--no-build"] if steps.sandboxed else []

    def exists(requirement: str) -> bool:
        status, _ = steps.run(
            [uv_binary(), "pip", "compile", "--no-deps", "--no-header", "--quiet",
             *no_build, "--python", interpreter.path, *index_args(), "-"],
            trusted=True, chdir=Path("/"), input_text=requirement + "\n",
            timeout=max(1.0, min(120.0, job.remaining())),
        )  # fmt: skip
        return status == 0

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(exists, plan.conda_packages))
    job.check()
    found = [r for r, ok in zip(plan.conda_packages, results, strict=True) if ok]
    skipped = [r for r, ok in zip(plan.conda_packages, results, strict=True) if not ok]
    return found, skipped


def _uv(
    job: Job,
    steps: Steps,
    args: list[str],
    code: str,
    *,
    trusted: bool,
    variables: dict[str, str] | None = None,
    env: Path,
) -> None:
    """Run uv with ``args`` for the environment ``env``, its output reworded for the log
    (``progress.UvOutput``); raises BackendError ``code`` when it fails."""
    reader = progress.UvOutput(
        _places(steps, env), compiles="--compile-bytecode" in args,
        doing="Resolving dependencies" if args[:2] == ["pip", "install"] else None,
    )  # fmt: skip
    status, tail = steps.run(
        [uv_binary(), *args], trusted=trusted, variables=variables, output=reader
    )
    if status != 0:
        fail(tail, code)


def _places(steps: Steps, env: Path, *relative: tuple[str | Path, str]) -> progress.Places:
    """The host paths uv and compileall print for ``env``, as the build log names them:
    the repository's files by their path in it, ``relative`` (dir, prefix) likewise, the
    rest by what they are."""
    python = f"Python {steps.interpreter.version}"
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    return progress.Places(
        names=[
            (env / ".bindery" / "requirements.in", "the combined requirements"),
            (env, "<environment>"),
            (steps.checkout, "the repository"),
            (steps.interpreter.path, python),
            (steps.interpreter.prefix, f"<{python}>"),
            (cache, "<uv cache>"),
            (cache.parent / sandboxing.FARMS, "<uv cache>"),
            (store.envs_dir(), "<environments>"),
            (shared_base.bases_dir(), "<shared Jupyter packages>"),
            (store.checkouts_dir(), "<checkouts>"),
            (str(getattr(settings, "BINDERY_BUILD_DIR", "")), "<build directory>"),
            (str(settings.VAR_DIR), "<portal data>"),
        ],
        prefixes=[(steps.checkout, ""), *relative],
    )


def _quiet_jupyterlab(env: Path) -> None:
    """Write JupyterLab's admin defaults (LAB_OVERRIDES) unless the environment has its own
    (as root, following no symlink a build could have planted)."""
    if not (env / "share" / "jupyter" / "lab").is_dir():
        return  # no JupyterLab in this environment
    with suppress(OSError):
        sandbox.write_nofollow(
            env, "share/jupyter/lab/settings/overrides.json",
            (json.dumps(LAB_OVERRIDES, indent=2) + "\n").encode(), exclusive=True,
        )  # fmt: skip


def _absolute(line: str, checkout: Path) -> str:
    """Plan lines name repository paths as ./<path>; uv gets them absolute."""
    for prefix in ("-c ", "--find-links ", ""):
        if line.startswith(prefix + "./"):
            rest = line[len(prefix) + 2 :]
            return f"{prefix}{checkout / rest if rest else checkout}"
    return line
