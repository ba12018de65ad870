"""What a sandbox sees, and who runs in it: the one policy for builds and sessions.

Code from a repository (uv's build backends, ``setup.py``, ``postBuild``, ``start``, every
notebook) runs here and nowhere else. Imports neither Django nor ``portal``: the hub's
spawner imports this module too.

A sandboxed command is ``[nsenter --net=…] bwrap … -- setpriv … -- command``:

- **bubblewrap runs as root** only to build the mount namespace (it can bind the
  interpreter from ``/root/.pyenv``, which an unprivileged bubblewrap could not open) and
  then runs ``setpriv`` with nothing but ``CAP_SETUID``, ``CAP_SETGID`` and
  ``CAP_SETPCAP``; ``setpriv`` empties the bounding, inheritable and ambient sets, sets
  ``no_new_privs`` and becomes the sandbox's **unprivileged host uid** (a real uid on the
  host, not a user-namespace mapping of root: files it can read or write on the host are
  those that uid owns). Its capabilities are then all zero.
- **No user namespaces inside** (a new one would give back capabilities over the new
  namespaces it owns): a seccomp filter refuses ``unshare``/``clone`` with
  ``CLONE_NEWUSER`` and ``clone3`` (``ENOSYS``, so the C library falls back to ``clone``),
  as Flatpak does.
- **Binds only what is needed**: ``/usr`` and the top-level symlinks into it, an allowlist
  of ``/etc`` (no ``shadow``, ``sudoers``, ssh keys, cron, service configuration), a
  ``passwd`` and ``group`` naming the sandbox's uid, the interpreter's installation, the
  paths the caller lists read-only or writable, a private ``/tmp``, ``/dev`` and ``/proc``
  of its own. The portal's ``var/`` (secrets, database, other users' volumes, other
  environments) is not there at all; the root is bubblewrap's own read-only tmpfs.
- **Namespaces**: pid, ipc, uts and cgroup of its own; the network namespace is the one
  the command starts in (``apps.netns`` makes it: root-owned, so nothing inside can change
  its routes).

Uids (``Ids``) are derived from one base (``BINDERY_SANDBOX_UID_BASE``): one for trusted
uv steps that fill the shared cache, one per concurrent build slot, one per portal user and
per anonymous owner, one group per team.

The file helpers at the end (``chown_tree``, ``seal_tree``, ``read_nofollow``,
``write_nofollow``, ``copy_nofollow``, ``open_dir``) are how a root process touches a tree
that sandboxed code wrote: descriptors relative to a trusted directory, never following a
symlink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_TMP = "/tmp"  # noqa: S108 - a private tmpfs inside the sandbox
MODES = ("on", "off")
_LEGACY_MODES = {"auto": "on", "bwrap": "on", "required": "on", "none": "off"}
# /etc as a sandbox sees it: what the C library, TLS, git, node, fonts and shells read.
ETC_ALLOW = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
    "fonts", "gai.conf", "gitconfig", "host.conf", "hostname", "hosts", "inputrc", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime", "magic", "mailcap", "mime.types",
    "nsswitch.conf", "npmrc", "os-release", "pki", "profile", "protocols", "python3",
    "resolv.conf", "rpc", "services", "ssl", "terminfo", "timezone", "xdg",
)  # fmt: skip
_TOP_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_KEEP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")  # for setpriv, dropped by it


class SandboxUnavailable(RuntimeError):
    """The machine cannot sandbox untrusted code and the operator did not opt out."""

    code = "SANDBOX_UNAVAILABLE"


# --- who runs in a sandbox ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    """The host uids and gids sandboxes run as, all above ``base``.

    ``base + 0`` trusted uv steps (the shared cache's owner), ``base + 1000 + slot`` one per
    concurrent build, ``base + 100000 + user id`` a portal user's sessions,
    ``base + 1000000 + hash`` an anonymous owner's, ``base + 2000000 + team id`` a team's
    group (its volume)."""

    base: int = 1_000_000

    @property
    def cache(self) -> int:
        return self.base

    def build(self, slot: int) -> int:
        if not 0 <= slot < 1000:
            raise ValueError("build slots are 0-999")
        return self.base + 1000 + slot

    def user(self, user_id: int) -> int:
        if not 0 < user_id < 900_000:
            raise ValueError("user ids must be 1-899999 for a sandbox uid")
        return self.base + 100_000 + user_id

    def anonymous(self, owner: str) -> int:
        digest = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big")
        return self.base + 1_000_000 + digest % 1_000_000

    def team(self, team_id: int) -> int:
        if not 0 < team_id < 1_000_000:
            raise ValueError("team ids must be 1-999999 for a sandbox gid")
        return self.base + 2_000_000 + team_id

    @property
    def session_range(self) -> range:
        return range(self.base + 100_000, self.base + 2_000_000)

    @property
    def team_range(self) -> range:
        return range(self.base + 2_000_001, self.base + 3_000_000)


@dataclass(frozen=True)
class Identity:
    """Who a sandboxed command runs as: a host uid, its group, supplementary groups (team
    volumes), and the name and home its ``/etc/passwd`` line shows."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    name: str = "jovyan"
    home: str = SANDBOX_TMP

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0 or any(g <= 0 for g in self.groups):
            raise ValueError("a sandbox never runs as root or with root's group")

    def passwd(self) -> str:
        return (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            f"{self.name}:x:{self.uid}:{self.gid}::{self.home}:/bin/bash\n"
        )

    def group(self) -> str:
        lines = ["root:x:0:", "nogroup:x:65534:", f"{self.name}:x:{self.gid}:"]
        lines += [f"team{g}:x:{g}:{self.name}" for g in self.groups]
        return "\n".join(lines) + "\n"


# --- whether this machine can do it -------------------------------------------------------------


def normalise_mode(value: str) -> str:
    """``on`` or ``off`` from a setting (``auto``/``bwrap`` mean on, ``none`` off); raises
    ValueError for anything else."""
    wanted = str(value or "on").strip().lower()
    wanted = _LEGACY_MODES.get(wanted, wanted)
    if wanted not in MODES:
        raise ValueError(f"BINDERY_SANDBOX is {value!r}: it must be on or off")
    return wanted


@lru_cache(maxsize=4)
def probe(bwrap: str = "bwrap") -> str:
    """Why sandboxes cannot run here, or "" when they can: bubblewrap and setpriv installed,
    this process root (switching to the sandbox's uid needs it), and a real sandboxed
    command comes out with that uid and no capabilities."""
    if shutil.which(bwrap) is None:
        return "bubblewrap (package bubblewrap) is not installed"
    if shutil.which("setpriv", path=SYSTEM_PATH) is None:
        return "setpriv (package util-linux) is not installed"
    if os.geteuid() != 0:
        return "the portal does not run as root, which switching to the sandbox's uids needs"
    spec = Spec(identity=Identity(uid=Ids().cache, gid=Ids().cache), chdir="/")
    try:
        with prepared(spec, bwrap=bwrap) as sandbox:
            done = subprocess.run(
                [*sandbox.argv, "/bin/sh", "-c", "id -u; grep CapEff /proc/self/status"],
                capture_output=True, timeout=30, pass_fds=sandbox.pass_fds, check=False,
            )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap does not run here: {exc}"
    out = done.stdout.decode(errors="replace").split()
    if done.returncode != 0 or out[:1] != [str(spec.identity.uid)] or out[-1:] != ["0" * 16]:
        error = done.stderr.decode(errors="replace").strip()[-300:]
        return f"bubblewrap cannot create its namespaces here ({error or 'no output'})"
    return ""


def require(mode: str, bwrap: str = "bwrap") -> bool:
    """Whether to sandbox (True) for ``mode``; raises SandboxUnavailable when the mode is
    ``on`` and this machine cannot."""
    if normalise_mode(mode) == "off":
        return False
    problem = probe(bwrap)
    if problem:
        raise SandboxUnavailable(
            f"Code from repositories is not run here: {problem}. Install what is missing, or "
            "set BINDERY_SANDBOX=off to run it without a sandbox (as root: only for a "
            "machine you would hand to every user)."
        )
    return True


# --- the seccomp filter -------------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# (unshare, clone, clone3) by architecture
_SYSCALLS = {"x86_64": (272, 56, 435), "aarch64": (97, 220, 435)}
_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000
_BPF = {"ld_w_abs": 0x20, "jeq_k": 0x15, "jset_k": 0x45, "jge_k": 0x35, "ret_k": 0x06}
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000


def seccomp_program(machine: str | None = None) -> bytes | None:
    """A classic-BPF seccomp program (``struct sock_filter[]``, native byte order) that
    refuses new user namespaces: ``unshare`` and ``clone`` with CLONE_NEWUSER get EPERM,
    ``clone3`` ENOSYS (its flags are behind a pointer; the C library then uses ``clone``),
    x32 system calls EPERM. None on an architecture this does not know."""
    arch = machine or platform.machine()
    if arch not in _AUDIT_ARCH:
        return None
    unshare, clone, clone3 = _SYSCALLS[arch]
    eperm, enosys = _SECCOMP_RET_ERRNO | errno.EPERM, _SECCOMP_RET_ERRNO | errno.ENOSYS
    ins: list[tuple[int, int, int, int]] = [
        (_BPF["ld_w_abs"], 0, 0, 4),  # seccomp_data.arch
        (_BPF["jeq_k"], 1, 0, _AUDIT_ARCH[arch]),
        (_BPF["ret_k"], 0, 0, eperm),  # another ABI (32-bit): refused
        (_BPF["ld_w_abs"], 0, 0, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":
        ins.append((_BPF["jge_k"], 0, 1, _X32_BIT))
        ins.append((_BPF["ret_k"], 0, 0, eperm))
    ins += [
        (_BPF["jeq_k"], 0, 1, clone3),
        (_BPF["ret_k"], 0, 0, enosys),
        (_BPF["jeq_k"], 1, 0, unshare),
        (_BPF["jeq_k"], 0, 3, clone),
        (_BPF["ld_w_abs"], 0, 0, 16),  # seccomp_data.args[0], low word (flags)
        (_BPF["jset_k"], 0, 1, _CLONE_NEWUSER),
        (_BPF["ret_k"], 0, 0, eperm),
        (_BPF["ret_k"], 0, 0, _SECCOMP_RET_ALLOW),
    ]
    if struct.pack("=H", 1) != struct.pack("<H", 1):  # big-endian: args' low word is at +4
        ins = [(c, t, f, 20 if (c, k) == (_BPF["ld_w_abs"], 16) else k) for c, t, f, k in ins]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


# --- the command --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One sandboxed command's view of the machine.

    ``read_only`` and ``writable`` are host paths bound at the same path; ``binds`` are
    ``(host, inside)`` pairs bound writable (volumes inside a working copy), ``read_only_over``
    ``(host, inside)`` read-only over what is already there (a checkout's ``.git``).
    ``files`` are ``(inside path, text)`` shown read-only (resolv.conf). ``prefix`` goes
    before bubblewrap (``nsenter`` into a network namespace) and ``prefix_fds`` are the
    descriptors it needs."""

    identity: Identity
    chdir: str
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    binds: tuple[tuple[str, str], ...] = ()
    read_only_over: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    prefix: tuple[str, ...] = ()
    prefix_fds: tuple[int, ...] = ()
    share_net: bool = True
    extra: tuple[str, ...] = ()  # more bubblewrap options (--info-fd, --block-fd, ...)
    clear_env: bool = True  # False: the caller's environment goes through as it is


@dataclass
class Prepared:
    """``argv`` (ends with ``--``: the command follows) and ``pass_fds`` for Popen; the
    caller calls :meth:`started` once the process runs (closes this side's copies)."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    _fds: list[int] = field(default_factory=list)

    def started(self) -> None:
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())


def _data_fd(data: bytes, opened: list[int]) -> int:
    """A pipe's read end holding ``data`` (bubblewrap reads it during set-up)."""
    read, write = os.pipe()
    opened.append(read)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write, view) :]
    finally:
        os.close(write)
    return read


def _system_args() -> list[str]:
    # bubblewrap, as root, makes the directories leading to a bind 0700: say 0755
    argv = ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/etc"]
    for link in _TOP_LINKS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            argv += ["--ro-bind", link, link]
    for name in ETC_ALLOW:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            if os.path.islink(path) and not os.path.exists(path):
                continue
            argv += ["--ro-bind", path, path]
    resolv = os.path.realpath("/etc/resolv.conf")
    if not resolv.startswith("/etc/") and os.path.exists(resolv):
        argv += ["--ro-bind", resolv, resolv]  # systemd-resolved's stub file
    argv += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    return argv


def _parents(targets: Sequence[str]) -> list[str]:
    """``--dir`` (mode 0755) for the directories leading to ``targets`` that no other
    target holds: bubblewrap, as root, would make them 0700, unreadable to the sandbox."""
    found: set[str] = set()
    for target in targets:
        parent = os.path.dirname(os.path.normpath(target))
        while parent not in ("/", ""):
            found.add(parent)
            parent = os.path.dirname(parent)
    holders = ["/usr", "/etc", "/proc", "/dev", *targets]  # not /tmp: a fresh tmpfs
    argv: list[str] = []
    for directory in sorted(found, key=lambda d: (d.count("/"), d)):
        if not any(directory != h and _covered(directory, [h]) for h in holders) and (
            directory not in targets
        ):
            argv += ["--perms", "0755", "--dir", directory]
    return argv


def _covered(path: str, shown: Sequence[str]) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in shown)


@contextlib.contextmanager
def prepared(spec: Spec, *, bwrap: str = "bwrap") -> Iterator[Prepared]:
    """The command line for ``spec``; descriptors are closed when the block ends."""
    opened: list[int] = []
    try:
        ident = spec.identity
        argv = [*spec.prefix, bwrap, "--die-with-parent", "--new-session"]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not spec.share_net:
            argv.append("--unshare-net")
        argv += ["--cap-drop", "ALL"]
        for cap in _KEEP_CAPS:
            argv += ["--cap-add", cap]
        argv += _system_args()
        argv += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", SANDBOX_TMP]
        # multiprocessing's semaphores: the sandbox's own tmpfs
        argv += ["--perms", "1777", "--tmpfs", "/dev/shm"]  # noqa: S108
        files = {"/etc/passwd": ident.passwd(), "/etc/group": ident.group(), **dict(spec.files)}
        for inside, text in files.items():
            argv += ["--perms", "0644", "--ro-bind-data", str(_data_fd(text.encode(), opened))]
            argv.append(inside)
        shown = ["/usr", "/etc"]
        read_only = [p for p in spec.read_only if os.path.exists(p) and not _covered(p, shown)]
        targets = [*read_only, *spec.writable, *(inside for _, inside in spec.binds)]
        argv += _parents(targets)
        for path in read_only:
            argv += ["--ro-bind", path, path]
        for path in spec.writable:
            argv += ["--bind", path, path]
        for host, inside in spec.binds:
            argv += ["--bind", host, inside]
        for host, inside in spec.read_only_over:
            argv += ["--ro-bind", host, inside]
        program = seccomp_program()
        if program is not None:
            argv += ["--seccomp", str(_data_fd(program, opened))]
        # bubblewrap, without capabilities by then, could not enter a directory only the
        # sandbox's uid may: the command does, once it is that uid (env --chdir)
        argv += [*spec.extra, "--remount-ro", "/", "--chdir", "/"]
        if spec.clear_env:
            argv.append("--clearenv")
        for name, value in spec.env:
            argv += ["--setenv", name, value]
        setpriv = shutil.which("setpriv", path=SYSTEM_PATH) or "/usr/bin/setpriv"
        groups = ["--groups", ",".join(map(str, ident.groups))] if ident.groups else []
        argv += ["--", setpriv, f"--reuid={ident.uid}", f"--regid={ident.gid}"]
        argv += groups or ["--clear-groups"]
        argv += ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
        argv += ["--no-new-privs", "--", "/usr/bin/env", f"--chdir={spec.chdir}", "--"]
        sandbox = Prepared(argv, (*spec.prefix_fds, *opened), opened)
        yield sandbox
    finally:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)
        opened.clear()


# Runs a repository's script (postBuild, start) inside the sandbox: its shebang if it has one
# (made executable by its owner if need be), else /bin/sh; never looked at by root outside.
RUN_SCRIPT = (
    'f=$1; shift; if [ "$(head -c 2 -- "$f")" = "#!" ]; then '
    '[ -x "$f" ] || chmod u+x -- "$f" 2>/dev/null; '
    'if [ -x "$f" ]; then exec "$f" "$@"; fi; '
    'read -r first < "$f"; exec ${first#??} "$f" "$@"; fi; exec /bin/sh "$f" "$@"'
)


def script_command(script: str) -> list[str]:
    """The command that runs ``script`` (a path inside the sandbox) as repo2docker does."""
    return ["/bin/sh", "-c", RUN_SCRIPT, "run-script", script]


# --- touching trees that sandboxed code wrote, as root ------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def chown_tree(
    root: str | Path,
    uid: int,
    gid: int,
    *,
    dirs_only: bool = False,
    only_from: int | None = None,
    skip_top: Sequence[str] = (),
) -> None:
    """Give everything under ``root`` (itself included) to ``uid:gid`` without following a
    symlink (``os.fwalk`` keeps directory descriptors; entries are changed through them).
    ``dirs_only``: directories only (files hardlinked from a uv cache must not change
    hands); ``only_from``: only entries that uid owns now; ``skip_top``: names directly
    under ``root`` left alone, with what they hold (a checkout's ``.git``)."""

    def change(name: str, fd: int | None, st: os.stat_result) -> None:
        if dirs_only and not stat.S_ISDIR(st.st_mode):
            return
        if only_from is not None and st.st_uid != only_from:
            return
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)

    change(str(root), None, os.lstat(root))
    top = os.path.normpath(str(root))
    for where, dirs, files, fd in os.fwalk(root, follow_symlinks=False):
        if os.path.normpath(where) == top and skip_top:
            dirs[:] = [d for d in dirs if d not in skip_top]
            files = [f for f in files if f not in skip_top]
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                change(name, fd, os.stat(name, dir_fd=fd, follow_symlinks=False))


def seal_tree(root: str | Path, *, keep_owner: int | None = None) -> None:
    """Make ``root`` root's and read-only to everyone else: owner root:root, no write bit
    for group and others, no setuid/setgid/sticky bits; symlinks are not followed.
    ``keep_owner``: regular files that uid owns keep their owner (a uv cache's files,
    hardlinked here, stay its owner's) and lose only the bits."""
    for _, dirs, files, fd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                _seal_entry(name, fd, keep_owner)
    os.chown(root, 0, 0, follow_symlinks=False)
    os.chmod(root, 0o755, follow_symlinks=False)  # noqa: S103 - read-only to all


def _seal_entry(name: str, dir_fd: int, keep_owner: int | None) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    kept = keep_owner is not None and st.st_uid == keep_owner and stat.S_ISREG(st.st_mode)
    if (st.st_uid != 0 or st.st_gid != 0) and not kept:
        os.chown(name, 0, 0, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        wanted, flags = 0o755, _DIR_FLAGS
    elif stat.S_ISREG(st.st_mode):
        wanted = 0o755 if st.st_mode & 0o111 else 0o644
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    else:
        return  # symlinks (no mode of their own), fifos, sockets, devices: never opened
    if stat.S_IMODE(st.st_mode) != wanted:
        # through a descriptor: fchmodat cannot refuse to follow, an O_NOFOLLOW open can
        fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            os.fchmod(fd, wanted)
        finally:
            os.close(fd)


def open_dir(base: str | Path, parts: Sequence[str], *, create: bool = False,
             replace: bool = False, mode: int = 0o755) -> int:  # fmt: skip
    """A descriptor for ``base/parts…`` reached without following a symlink below ``base``.
    ``create``: missing directories are made; ``replace``: a symlink or file in the way is
    replaced by a directory (for trees the caller owns), else it is an error (OSError
    ELOOP/ENOTDIR)."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise OSError(errno.EINVAL, f"bad path component {part!r}")
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, mode, dir_fd=fd)
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if not replace or exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(part, dir_fd=fd)
                os.mkdir(part, mode, dir_fd=fd)
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, f"not a relative path inside the tree: {rel!r}")
    return parts


def read_nofollow(root: str | Path, rel: str, *, limit: int = 64 * 1024 * 1024,
                  tail: bool = False) -> bytes:  # fmt: skip
    """The content of the regular file ``root/rel``; raises OSError when any part of the
    path is a symlink (ELOOP/ENOTDIR), it is not a regular file, or it is over ``limit``
    (``tail``: its last ``limit`` bytes instead)."""
    parts = _split(rel)
    parent = open_dir(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=parent)  # fmt: skip
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{rel} is not a regular file")
        if tail and st.st_size > limit:
            fh.seek(st.st_size - limit)
        data = fh.read(limit + 1)
    if len(data) > limit:
        if not tail:
            raise OSError(errno.EFBIG, f"{rel} is larger than {limit} bytes")
        data = data[-limit:]  # it grew while being read
    return data


def lstat_nofollow(root: str | Path, rel: str) -> os.stat_result:
    """``lstat`` of ``root/rel`` whose parents are reached without following symlinks."""
    parts = _split(rel)
    parent = open_dir(root, parts[:-1])
    try:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def readlink_nofollow(root: str | Path, rel: str) -> str:
    parts = _split(rel)
    parent = open_dir(root, parts[:-1])
    try:
        return os.readlink(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)


def write_nofollow(root: str | Path, rel: str, data: bytes, *, mode: int = 0o644,
                   exclusive: bool = False) -> bool:  # fmt: skip
    """Write ``data`` to ``root/rel``, making parents, following no symlink: an existing
    entry is replaced (``exclusive``: left alone, returns False). Returns True when written."""
    parts = _split(rel)
    parent = open_dir(root, parts[:-1], create=True)
    try:
        if exclusive:
            try:
                os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                return False
            except FileNotFoundError:
                pass
        tmp = f".{parts[-1]}.bindery-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=parent)  # fmt: skip
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        return True
    finally:
        os.close(parent)


def copy_nofollow(source_root: str | Path, rel: str, target_root: str | Path) -> None:
    """Copy ``source_root/rel`` (a regular file, or a symlink copied as a symlink) to
    ``target_root/rel``; the source is read without following any symlink. Raises OSError."""
    st = lstat_nofollow(source_root, rel)
    parts = _split(rel)
    if stat.S_ISLNK(st.st_mode):
        link = readlink_nofollow(source_root, rel)
        parent = open_dir(target_root, parts[:-1], create=True)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=parent)
            os.symlink(link, parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
        return
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"{rel} is neither a file nor a symlink")
    data = read_nofollow(source_root, rel)
    write_nofollow(target_root, rel, data, mode=stat.S_IMODE(st.st_mode) & 0o755)


__all__ = [
    "ETC_ALLOW",
    "MODES",
    "RUN_SCRIPT",
    "SANDBOX_TMP",
    "Identity",
    "Ids",
    "Prepared",
    "SandboxUnavailable",
    "Spec",
    "chown_tree",
    "copy_nofollow",
    "lstat_nofollow",
    "normalise_mode",
    "open_dir",
    "prepared",
    "probe",
    "read_nofollow",
    "readlink_nofollow",
    "require",
    "script_command",
    "seal_tree",
    "seccomp_program",
    "write_nofollow",
]
