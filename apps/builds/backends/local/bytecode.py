"""Compiling an environment's bytecode: only the files whose pyc is missing or stale.

Most of an environment's pycs are linked from the shared base (``shared_base``) before this
runs. ``python -m compileall -j 0`` would find them up to date, but only after handing every
file to a worker process one at a time (seconds for the Jupyter stack's ~4,000 files on two
cores, for nothing). ``COMPILE_SCRIPT`` checks each file's pyc header itself, as
compileall does (magic number, timestamp flags, the source's mtime and size), and hands
only the stale ones to ``compileall.compile_file``, in worker processes when there are
many; given the list of files the shared base had no pyc for, it looks at those alone. It
prints compileall's ``Compiling '…'...`` lines (``progress.CompileOutput`` counts them) and
exits 1 when a file did not compile, as compileall does. It goes as deep as compileall.

It runs with the environment's interpreter (every Python from 3.6 on), as the build's uid
(it runs the environment's ``.pth`` files, like any start of that interpreter).
"""

from __future__ import annotations

from pathlib import Path

from apps.builds.backends import progress
from apps.builds.backends.local.runner import Job, meaningful_line
from apps.builds.backends.local.steps import Steps

COMPILE_SCRIPT = r"""
import functools, importlib.util, os, struct, sys
from compileall import compile_file

HEADER = 16 if sys.version_info >= (3, 7) else 12
MAGIC = importlib.util.MAGIC_NUMBER


def stale(path):
    try:
        st = os.stat(path)
        with open(importlib.util.cache_from_source(path), "rb") as handle:
            head = handle.read(HEADER)
    except (OSError, ValueError):
        return True
    stamp = [int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF]
    if HEADER == 16:
        return head != struct.pack("<4sLLL", MAGIC, 0, *stamp)
    return head != struct.pack("<4sLL", MAGIC, *stamp)


# as deep as compileall goes by default: 10 levels before 3.9, then the recursion limit
LEVELS = 10 if sys.version_info < (3, 9) else sys.getrecursionlimit()
compile_one = functools.partial(compile_file, quiet=0)  # picklable for any start method
only, sites = sys.argv[1], [site.rstrip(os.sep) for site in sys.argv[2:]]
todo = []
if only:  # the files no pyc was linked for (shared_base): the rest is known to be valid
    with open(only) as handle:
        for path in handle.read().split("\0"):
            for site in sites:
                if path.startswith(site + os.sep):
                    deep = path[len(site) + 1:].count(os.sep) <= LEVELS
                    if deep and path.endswith(".py") and os.path.isfile(path) and stale(path):
                        todo.append(path)
else:
    for site in sites:
        top = site.count(os.sep)
        for where, dirs, files in os.walk(site):
            if where.count(os.sep) - top >= LEVELS:
                dirs[:] = []
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                path = os.path.join(where, name)
                if name.endswith(".py") and stale(path):
                    todo.append(path)
if len(todo) < 64:
    results = [compile_one(path) for path in todo]
else:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(compile_one, todo, chunksize=16))
sys.exit(0 if all(results) else 1)
"""


def compile_environment(
    job: Job,
    steps: Steps,
    env: Path,
    sites: list[str],
    places: progress.Places,
    only: Path | None = None,
) -> None:
    """Byte-compile what ``env``'s ``sites`` (its site-packages) lack, as the build's uid
    (see the module docstring): the files listed in ``only`` (NUL-separated paths) when
    given, else every file without a valid pyc. A file that does not compile is a warning
    (it compiles when imported, or never is)."""
    if not sites:
        return
    # unbuffered: the workers' lines arrive whole and as they come
    argv = [str(env / "bin" / "python"), "-u", "-c", COMPILE_SCRIPT, str(only or ""), *sites]
    reader = progress.CompileOutput(places)
    status, tail = steps.run(argv, trusted=False, chdir=env, output=reader)
    if status != 0:
        job.warn(
            "Byte-compiling some packages failed; they are compiled when imported "
            f"({meaningful_line(tail)[:200]})."
        )
