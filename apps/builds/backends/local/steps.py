"""How a build runs its commands: on the host, or in the sandbox, and with what it sees.

Installing a package runs its build backend (``setup.py``, any sdist's build code), the
repository's own included, so every uv command of a build runs in bubblewrap like postBuild
does: only /usr, /etc, /opt, the interpreter and the uv binary (read-only), the checkout
(writable, its ``.git`` read-only: git runs on the host afterwards), a private /tmp and the
network (the package index, see ``network``) are there; the portal's code, settings,
secrets and database, other checkouts and home directories are not. uv also gets the
environment and its cache writable. It hardlinks files from its cache into environments,
and link(2) fails (EXDEV) between two bind mounts even on one filesystem, so both must come
in through one bind: BINDERY_BUILD_DIR, when it holds the environments directory and the
cache and none of the portal's own directories. Otherwise the environment and the cache
are bound each on its own and uv copies (``UV_LINK_MODE=copy``; the build log says why).
Everything under BINDERY_BUILD_DIR is thus visible and writable to a build, other
environments and the cache included: it isolates the portal from builds, not builds from
each other. postBuild gets only its environment, the checkout and a temporary directory of
its own (on disk: its TMPDIR and tool caches; see ``postbuild``).

Trusted steps (wheels only, nothing from a package runs) run as the cache's owner;
everything that runs a stranger's code as the build's own uid (``sandboxing``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps import sandbox
from apps.builds.backends import progress, sandboxing, store
from apps.builds.backends.config import BuildPlan
from apps.builds.backends.local.interpreters import Interpreter
from apps.builds.backends.local.network import CA_ENV, Isolation
from apps.builds.backends.local.runner import Job, build_limits, capture, log_once
from apps.builds.backends.local.uv_tool import uv_binary, uv_env
from portal.errors import BackendError

_SANDBOX_TMP = "/tmp"  # noqa: S108 - a private tmpfs inside the sandbox


def sandbox_mode() -> str:
    """ "bwrap" or "none", from settings.BINDERY_SANDBOX (on | off; auto and bwrap mean on,
    none off). Raises SANDBOX_UNAVAILABLE when it is on and this machine cannot sandbox
    (``apps.sandbox.probe`` says why): untrusted code never runs unsandboxed by default."""
    try:
        wanted = sandbox.require(str(getattr(settings, "BINDERY_SANDBOX", "on")))
    except (sandbox.SandboxUnavailable, ValueError) as exc:
        raise BackendError(str(exc), permanent=False, code="SANDBOX_UNAVAILABLE") from exc
    return "bwrap" if wanted else "none"


def uv_binds(env: Path | None = None) -> tuple[tuple[Path, ...], str]:
    """(what the sandboxed uv gets writable, why uv copies instead of hardlinking or "").

    BINDERY_BUILD_DIR alone, when it holds both the environments directory and the uv
    cache and none of the portal's own directories: uv then hardlinks from its cache (one
    bind, one mount). Otherwise ``env`` and the cache each on its own (``env`` None: the
    cache only), and the reason uv has to copy. Raises SANDBOX_UNAVAILABLE when the cache
    directory holds portal directories: it cannot be shown to a build.
    """
    envs = store.envs_dir()
    cache = Path(settings.BINDERY_UV_CACHE_DIR)
    root = Path(getattr(settings, "BINDERY_BUILD_DIR", "") or cache)
    if envs.is_relative_to(root) and cache.is_relative_to(root):
        exposed = portal_paths_under(root)
        if not exposed:
            return (root,), ""
        reason = (
            f"BINDERY_BUILD_DIR ({root}) also holds {exposed[0]}, which builds must not see, "
            "so it is not bound whole"
        )
    else:
        reason = (
            f"BINDERY_ENVS_DIR ({envs}) and BINDERY_UV_CACHE_DIR ({cache}) are apart, not "
            f"both inside BINDERY_BUILD_DIR ({root})"
        )
    exposed = portal_paths_under(cache)
    if exposed:
        raise BackendError(
            f"BINDERY_UV_CACHE_DIR ({cache}) holds {exposed[0]}: builds cannot be given it.",
            permanent=False,
            code="SANDBOX_UNAVAILABLE",
        )
    return ((cache,) if env is None else (env, cache)), reason


def portal_paths_under(root: Path) -> list[Path]:
    """The portal's own places at or under ``root``: its code, its state and secrets
    (VAR_DIR, the hub's directory, an SQLite database), the checkouts of every repository,
    sessions' working copies and volumes."""
    top = root.resolve()
    names = ("BASE_DIR", "VAR_DIR", "BINDERY_HUB_DIR", "BINDERY_CHECKOUTS_DIR",
             "BINDERY_SESSIONS_DIR", "BINDERY_VOLUMES_DIR")  # fmt: skip
    found = [Path(value).resolve() for name in names if (value := getattr(settings, name, ""))]
    database = settings.DATABASES["default"]
    if "sqlite" in str(database.get("ENGINE", "")) and database.get("NAME"):
        found.append(Path(str(database["NAME"])).resolve())
    return [path for path in found if path == top or path.is_relative_to(top)]


@dataclass(frozen=True)
class Steps:
    """How one build runs its commands: on the host as root (``slot`` None: BINDERY_SANDBOX
    is off), or in the sandbox as the cache's owner (trusted uv steps) or as the build's own
    uid (everything that runs a stranger's code); see ``sandboxing``."""

    job: Job
    interpreter: Interpreter
    variables: dict[str, str]
    writable: tuple[Path, ...]
    checkout: Path
    isolation: Isolation | None
    slot: sandboxing.Slot | None
    limits: Callable[[], None] | None = None  # joins the build's cgroups (apps.cgroups)

    @property
    def sandboxed(self) -> bool:
        return self.slot is not None

    def run(
        self,
        argv: Sequence[str],
        *,
        trusted: bool,
        chdir: Path | None = None,
        variables: dict[str, str] | None = None,
        writable: Sequence[Path] = (),
        input_text: str | None = None,
        timeout: float | None = None,
        own_view: bool = False,
        output: progress.Output | None = None,
    ) -> tuple[int, list[str]]:
        """Run ``argv`` (streamed to the log, or with ``input_text`` captured quietly);
        returns (status, last lines). ``own_view``: only ``writable`` and the checkout are
        writable (postBuild), not the build directory uv needs. ``output``: see
        ``Job.run``."""
        env = {**self.variables, **(variables or {})}
        if self.slot is not None and not trusted:
            # never the shared cache: the build's farm of it, or none
            if self.slot.farm.is_dir():
                env["UV_CACHE_DIR"] = str(self.slot.farm)
            else:
                env.pop("UV_CACHE_DIR", None)
                env["UV_NO_CACHE"] = "1"
        where = chdir or self.checkout
        if self.slot is None:
            if input_text is not None:
                return capture(list(argv), env, where, input_text, timeout)
            return self.job.run(argv, cwd=where, env=env, output=output)
        spec = self.spec(
            trusted=trusted, chdir=where, variables=env, writable=writable, own_view=own_view
        )
        with sandbox.prepared(spec) as prepared:
            command = [*prepared.argv, *argv]
            if input_text is not None:
                return capture(command, {}, Path("/"), input_text, timeout, prepared.pass_fds)
            return self.job.run(command, cwd=Path("/"), env={}, pass_fds=prepared.pass_fds,
                                preexec=build_limits(self.limits), output=output)  # fmt: skip

    def spec(
        self,
        *,
        trusted: bool,
        chdir: Path,
        variables: dict[str, str],
        writable: Sequence[Path] = (),
        own_view: bool = False,
    ) -> sandbox.Spec:
        assert self.slot is not None
        owner = sandboxing.ids().cache if trusted else self.slot.uid
        shown = [*writable] if own_view else [*self.writable, *writable]
        read_only = [self.interpreter.prefix, self.interpreter.path, uv_binary()]
        read_only += [v for k in CA_ENV if (v := variables.get(k))]
        over: list[tuple[str, str]] = []
        if trusted:
            read_only.append(str(self.checkout))
        else:
            shown.append(self.checkout)
            if (self.checkout / ".git").is_dir():
                # git runs on the host afterwards (git status, for the overlay): code that
                # could edit .git/config could make it run a filter or hook of its choosing.
                over.append((str(self.checkout / ".git"), str(self.checkout / ".git")))
        files: tuple[tuple[str, str], ...] = ()
        prefix: tuple[str, ...] = ()
        fds: tuple[int, ...] = ()
        if self.isolation is not None:
            prefix, fds = self.isolation.prefix, self.isolation.pass_fds
            if self.isolation.resolv is not None:
                files = (("/etc/resolv.conf", Path(self.isolation.resolv).read_text()),)
        return sandbox.Spec(
            identity=sandbox.Identity(uid=owner, gid=owner, name="builder"),
            chdir=str(chdir),
            read_only=tuple(read_only),
            writable=tuple(str(p) for p in dict.fromkeys(shown)),
            read_only_over=tuple(over),
            files=files,
            env=tuple(variables.items()),
            prefix=prefix,
            prefix_fds=fds,
        )


def make_steps(
    job: Job,
    plan: BuildPlan,
    interpreter: Interpreter,
    env: Path,
    checkout: Path,
    home: str,
    isolation: Isolation | None,
    slot: sandboxing.Slot | None,
) -> Steps:
    """How this build runs its commands (see :class:`Steps` and the module docstring),
    with what uv may write and whether it hardlinks or copies."""
    if slot is None:
        if plan.installs_repository:
            job.warn(
                "The repository's package was built without a sandbox (BINDERY_SANDBOX is off)."
            )
        return Steps(job, interpreter, uv_env(home), (), checkout, None, None)
    variables = uv_env(_SANDBOX_TMP)
    variables["TMPDIR"] = _SANDBOX_TMP
    writable, copying = uv_binds(env)
    for place in writable:
        place.mkdir(parents=True, exist_ok=True)  # bind targets must exist
    farm_root = Path(settings.BINDERY_UV_CACHE_DIR).parent / sandboxing.FARMS
    if not any(farm_root == w or farm_root.is_relative_to(w) for w in writable):
        farm_root.mkdir(parents=True, exist_ok=True)
        writable = (*writable, farm_root)
    if copying:
        variables["UV_LINK_MODE"] = "copy"
        # why (directory settings and their paths) is for the operators' log
        job.say("uv copies packages from its cache instead of hardlinking them (slower)")
        log_once(f"Builds copy packages from the uv cache instead of hardlinking: {copying}.")
    job.say("uv runs in a bubblewrap sandbox, as an unprivileged user")
    return Steps(job, interpreter, variables, writable, checkout, isolation, slot)
