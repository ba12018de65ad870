"""The shared, precompiled base: the base set of one Python (``interpreters``) installed and
byte-compiled once, whose bytecode every environment on that Python links instead of
compiling the same Jupyter packages again (most of a cold build's time).

Why a link is enough: uv hardlinks the files it installs from its cache, so a file that an
environment and the base installed from the same wheel is one inode, with one mtime and one
size. A timestamp ``.pyc`` is valid for its source by exactly those (importlib and
compileall compare the source's mtime and size with the pyc's header), and importlib sets
``co_filename`` to the importing path when it loads one, so the base's
``__pycache__/<mod>.<tag>.pyc`` serves the environment's copy as it is. A file that is not
the base's inode (the repository's own packages, another version of a base package, a
package the resolver chose differently) gets no link and is compiled as before, by the
build's uid.

Who does what (DESIGN.md: root never follows a path a repository could have planted; code
from packages runs only as a build's uid):

- The base is made under an flock (``<name>.lock``) the first time a build needs it, by
  trusted steps only: ``uv venv`` and a wheels-only ``uv pip install --no-build`` as the
  cache's owner (nothing from a package runs), then ``python -I -S -m compileall`` as the
  cache's owner from ``/`` (``-S``: no ``.pth`` file of a package is run; compiling only
  parses). It is then sealed (root's directories; the cache's and the compiled files stay
  the cache owner's, with no write bit for anyone else) and ``<name>.json`` is written
  last, with the base's index (each source file that has a pyc fit to share, and its
  inode): a base with its record is ready. One that cannot be made wheels-only is noted
  (``<name>.failed``) and retried after ``RETRY_AFTER``; builds go on without it.
- :func:`link_bytecode` runs as root right after an environment's trusted install, before
  the environment is handed to the build's uid and before any untrusted code runs; it
  walks the environment's ``lib/python*/site-packages`` by directory descriptors, never
  following a symlink, and links the base's pyc (a regular file root or the cache's owner
  owns and nobody else may write, checked when the index was taken) of each file whose
  inode is the index's; it lists the other source files, the only ones left to compile
  (``bytecode``). The build's uid can replace a linked pyc in its own environment (its
  directories are its own: a rename replaces the name) but never change the shared inode,
  which is every other environment's and the base's.

Layout, beside the environments directory (``BINDERY_BASES_DIR`` to move it; it must stay in
the directory bound whole into builds, with the cache, for links to exist)::

    <bases>/<python version>-<digest>/        the base virtualenv
    <bases>/<python version>-<digest>.json    written last: the base is ready (for
                                              BINDERY_SHARED_BASE_DAYS, 7 by default)
    <bases>/<python version>-<digest>.lock    flock while it is made
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from apps import sandbox
from apps.builds.backends import progress, sandboxing, store
from apps.builds.backends.local.interpreters import Interpreter
from apps.builds.backends.local.steps import Steps, sandbox_mode
from apps.builds.backends.local.uv_tool import index_args, uv_binary

BASES = ".bindery-bases"
BASE_VERSION = "2"  # in every base's name: a change in how bases are made makes new ones
RETRY_AFTER = 3600.0  # seconds before a base that could not be made is tried again
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 64


def bases_dir() -> Path:
    configured = getattr(settings, "BINDERY_BASES_DIR", "")
    return Path(configured) if configured else store.envs_dir().parent / BASES


def base_name(interpreter: Interpreter, lines: Sequence[str]) -> str:
    """``<version>-<digest>``: one base per interpreter version, base set, index and sandbox
    mode (a base made without the sandbox was writable by root-run builds: never served once
    the sandbox is on)."""
    digest = hashlib.sha256(
        "\n".join(
            [BASE_VERSION, interpreter.path, sandbox_mode(), *index_args(), "", *lines]
        ).encode()
    ).hexdigest()[:16]
    return f"{interpreter.version}-{digest}"


def cache_tag(interpreter: Interpreter) -> str:
    """The interpreter's ``sys.implementation.cache_tag`` (the builder runs CPython)."""
    major, minor = interpreter.version.split(".")[:2]
    return f"cpython-{major}{minor}"


def wanted(steps: Steps, env: Path) -> bool:
    """Whether a base can serve ``env``: sharing is on (``BINDERY_SHARED_BASE``), uv hardlinks
    (the environment, the bases and the cache in one bind when sandboxed, on one file system
    when not): copied files are new inodes, which no base pyc could serve."""
    if not getattr(settings, "BINDERY_SHARED_BASE", True):
        return False
    if steps.variables.get("UV_LINK_MODE", "hardlink") != "hardlink":
        return False
    bases = bases_dir()
    if steps.sandboxed:
        return any(bases.is_relative_to(w) and env.is_relative_to(w) for w in steps.writable)
    try:
        places = (Path(settings.BINDERY_UV_CACHE_DIR), env.parent, bases.parent)
        return len({os.stat(p).st_dev for p in places}) == 1
    except OSError:
        return False


def ready_base(interpreter: Interpreter, lines: Sequence[str]) -> Path | None:
    """The ready base of ``lines`` for ``interpreter``, or None (none, or older than
    ``BINDERY_SHARED_BASE_DAYS``: the index's newer releases of the packages the base set
    does not pin would otherwise no longer be the base's, and go unshared)."""
    name = base_name(interpreter, lines)
    base = bases_dir() / name
    marker = bases_dir() / f"{name}.json"
    if store.read_json(marker) is None or not (base / "pyvenv.cfg").is_file():
        return None
    days = float(getattr(settings, "BINDERY_SHARED_BASE_DAYS", 7))
    if time.time() - store.last_used(marker) > days * 86400:
        return None
    return base


def ensure_base(
    steps: Steps, lines: Sequence[str], places: Callable[[Path], progress.Places]
) -> Path | None:
    """The ready base of ``lines`` for the build's interpreter, made now (as trusted steps of
    this build, under the base's flock) if there is none; None when it cannot be made
    (the build then compiles everything itself). Raises only what ``job.check`` raises
    (cancelled, timed out). Safe to run twice and from concurrent builds."""
    job, interpreter = steps.job, steps.interpreter
    if not lines:
        return None
    found = ready_base(interpreter, lines)
    if found is not None:
        return found
    root = bases_dir()
    name = base_name(interpreter, lines)
    failed = root / f"{name}.failed"
    if time.time() - store.last_used(failed) < RETRY_AFTER:
        return None
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 - the cache's owner reaches its base through it

    def waiting() -> None:
        job.say("Waiting for another build making the shared Jupyter packages")

    with store.flock(root / f"{name}.lock", cancel=job.cancel, check=job.check,
                     on_wait=waiting):  # fmt: skip
        found = ready_base(interpreter, lines)
        if found is not None:
            return found
        job.say(
            f"Preparing the Jupyter packages for Python {interpreter.version} once, "
            "for every environment on it: installing and compiling them"
        )
        base = root / name
        (root / f"{name}.json").unlink(missing_ok=True)  # a stale base is made again
        with job.timed("base"):
            problem = _make(steps, base, lines, places(base))
        if problem:
            job.say(f"The shared Jupyter packages could not be prepared ({problem}); "
                    "this build compiles them itself")  # fmt: skip
            sandboxing.remove_tree(base)
            failed.write_text(problem + "\n")
            return None
        failed.unlink(missing_ok=True)
        index = _index(base, cache_tag(interpreter))
        store.write_json(root / f"{name}.json", {
            "name": name, "base_version": BASE_VERSION, "python": interpreter.path,
            "python_version": interpreter.version, "lines": list(lines),
            "packages": sandboxing.packages(base), "created": datetime.now(UTC).isoformat(),
            "seconds": job.durations.get("base", 0.0), "bytecode": len(index),
            "index": index,
        })  # fmt: skip
        return base


def _make(steps: Steps, base: Path, lines: Sequence[str], places: progress.Places) -> str:
    """Make the base at ``base`` with trusted steps; "" when it is ready to be recorded, else
    what went wrong (for the log: no host path)."""
    job, interpreter = steps.job, steps.interpreter
    if steps.sandboxed:
        sandboxing.new_environment(base, sandboxing.ids().cache)
    else:
        sandboxing.remove_tree(base)
        base.mkdir(parents=True)
    # quiet (captured): the log says what this is for, and the compile's progress
    status, _ = steps.run(
        [uv_binary(), "venv", "--no-project", "--allow-existing", "--python",
         interpreter.path, str(base)], trusted=True, chdir=Path("/"), input_text="",
        timeout=max(1.0, job.remaining()),
    )  # fmt: skip
    if status != 0:
        return "its virtual environment could not be made"
    requirements = base / ".bindery" / "requirements.in"
    sandbox.write_nofollow(base, ".bindery/requirements.in", ("\n".join(lines) + "\n").encode())
    status, _ = steps.run(
        [uv_binary(), "pip", "install", "--python", str(base / "bin" / "python"), "--no-build",
         *index_args(), "-r", str(requirements)], trusted=True, chdir=Path("/"), input_text="",
        timeout=max(1.0, job.remaining()),
    )  # fmt: skip
    if status != 0:
        return "not every package of the base set has a wheel, or the index failed"
    job.check()
    sites = [str(p) for p in sorted(base.glob("lib/python*/site-packages"))]
    # -I -S: neither the environment's variables nor any .pth file a package shipped; from
    # / (no module a wheel put in the environment's root shadows compileall)
    argv = [interpreter.path, "-I", "-S", "-u", "-m", "compileall", "-j", "0", *sites]
    reader = progress.CompileOutput(places)
    steps.run(argv, trusted=True, chdir=Path("/"), output=reader)
    # a file that does not compile (a package's test data) has no pyc: environments compile
    # it again, and say so, as without a base
    job.check()
    if steps.sandboxed:
        sandbox.seal_tree(base, keep_owner=sandboxing.ids().cache)
    return ""


@dataclass
class Linked:
    """What :func:`link_bytecode` did: how many pycs it linked, and the source files it
    linked none for (host paths), which are all that is left to compile; None when it did
    not look everywhere (a tree deeper than it goes)."""

    count: int = 0
    unlinked: list[str] | None = field(default_factory=list)


def _index(base: Path, tag: str) -> dict[str, int]:
    """``{source path in the base: its inode}`` for every source file of the base's
    site-packages with a pyc fit to share: regular, root's or the cache owner's, writable by
    nobody else. Taken once, when the base is made (sealed: nothing changes it after)."""
    # sandboxed, every pyc of a base is compiled as the cache's owner: a root-owned one was
    # chowned by the seal from someone else, and is not fit to share
    owners = {sandboxing.ids().cache} if sandbox_mode() == "bwrap" else {0}
    index: dict[str, int] = {}

    def visit(fd: int, rel: str, depth: int) -> None:
        sources, subdirs = _entries(fd)
        pycs: set[str] = set()
        with contextlib.suppress(OSError):
            cache = os.open("__pycache__", _DIR, dir_fd=fd)
            try:
                for name in os.listdir(cache):
                    st = os.stat(name, dir_fd=cache, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_uid in owners and not (
                        st.st_mode & 0o022
                    ):  # fmt: skip
                        pycs.add(name)
            finally:
                os.close(cache)
        for name in sources:
            if f"{name[:-3]}.{tag}.pyc" in pycs:
                with contextlib.suppress(OSError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        index[f"{rel}/{name}"] = st.st_ino
        if depth < _MAX_DEPTH:
            for name in subdirs:
                with contextlib.suppress(OSError):
                    inner = os.open(name, _DIR, dir_fd=fd)
                    try:
                        visit(inner, f"{rel}/{name}", depth + 1)
                    finally:
                        os.close(inner)

    for parts in sandboxing.site_packages(base):
        with contextlib.suppress(OSError):
            fd = sandbox.open_dir(base, parts)
            try:
                visit(fd, "/".join(parts), 0)
            finally:
                os.close(fd)
    return index


def _entries(fd: int) -> tuple[list[str], list[str]]:
    """(the ``.py`` files, the directories but ``__pycache__``) of the directory ``fd``,
    known from its directory entries (no stat), sorted; symlinks are neither."""
    sources: list[str] = []
    subdirs: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            name = entry.name
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    if name != "__pycache__":
                        subdirs.append(name)
                elif name.endswith(".py") and entry.is_file(follow_symlinks=False):
                    sources.append(name)
    return sorted(sources), sorted(subdirs)


def link_bytecode(env: Path, base: Path, interpreter: Interpreter) -> Linked:
    """Link the base's pyc of every source file of ``env``'s site-packages that is the
    base's own inode (by the base's index, see :func:`_index`) into ``env`` (see the module
    docstring). Run as root before any untrusted code ran in ``env``; follows no symlink in
    ``env`` (the base is root's and sealed)."""
    tag = cache_tag(interpreter)
    record = store.read_json(base.with_name(f"{base.name}.json")) or {}
    index = record.get("index")
    done = Linked()
    if not isinstance(index, dict):
        done.unlinked = None
        return done
    for parts in sandboxing.site_packages(env):
        try:
            device = os.stat(base.joinpath(*parts)).st_dev
            env_fd = sandbox.open_dir(env, parts)
        except OSError:
            done.unlinked = None  # (a file system apart, say: nothing to share)
            continue
        try:
            _link_dir(env_fd, str(env), "/".join(parts), str(base), device, index, tag, done, 0)
        finally:
            os.close(env_fd)
    return done


def _link_dir(env_fd: int, env: str, rel: str, base: str, device: int,
              index: dict[str, int], tag: str, done: Linked, depth: int) -> None:  # fmt: skip
    """One directory of the environment's site-packages (``rel`` below ``env``)."""
    sources, subdirs = _entries(env_fd)
    env_cache = [-1]  # the environment's __pycache__ here, opened on first need
    try:
        for name in sources:
            here = f"{rel}/{name}"
            inode = index.get(here)
            if inode is not None and _link_one(env_fd, name, base, rel, inode, device, tag,
                                               env_cache):  # fmt: skip
                done.count += 1
            elif done.unlinked is not None:
                done.unlinked.append(f"{env}/{here}")
    finally:
        if env_cache[0] >= 0:
            os.close(env_cache[0])
    if depth >= _MAX_DEPTH:
        if subdirs:
            done.unlinked = None  # compile by walking the environment
        return
    for name in subdirs:
        try:
            inner = os.open(name, _DIR, dir_fd=env_fd)
        except OSError:
            continue
        try:
            _link_dir(inner, env, f"{rel}/{name}", base, device, index, tag, done, depth + 1)
        finally:
            os.close(inner)


def _link_one(env_fd: int, name: str, base: str, rel: str, inode: int, device: int,
              tag: str, env_cache: list[int]) -> bool:  # fmt: skip
    """Link the base's pyc of ``rel/name`` into the environment's ``__pycache__`` (made and
    opened on first need, its descriptor kept in ``env_cache``) when the environment's file
    is the base's inode. False when it is not, or the link could not be made (it is then
    compiled)."""
    try:
        st = os.stat(name, dir_fd=env_fd, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) != (inode, device):
        return False
    pyc = f"{name[:-3]}.{tag}.pyc"
    try:
        if env_cache[0] < 0:
            with contextlib.suppress(FileExistsError):
                os.mkdir("__pycache__", 0o755, dir_fd=env_fd)
            env_cache[0] = os.open("__pycache__", _DIR, dir_fd=env_fd)  # ELOOP: a symlink
        # the base's path: root's directories (sealed), nothing a build can change
        os.link(f"{base}/{rel}/__pycache__/{pyc}", pyc, dst_dir_fd=env_cache[0],
                follow_symlinks=False)  # fmt: skip
    except OSError:  # FileExistsError: the wheel shipped one, the compile step judges it
        return False
    return True
