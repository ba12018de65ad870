"""Running git safely on hostile input.

- Credentials reach git only through GIT_ASKPASS and this process's environment: never in a
  URL, argv or log line. The askpass script answers only for the expected host, so a
  redirect to another host cannot collect the token.
- Only http(s) transports are allowed (no ext::, file://, ssh), system and user git config
  are ignored, hooks are disabled, and git never prompts on a terminal.
- Callers put ``--`` before user-supplied values; refs are validated in repos.validation.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from apps.repos.types import GitCredential
from portal.errors import BackendError

_ASKPASS = """#!/bin/sh
# Answers git's credential prompts from the environment, for the expected host only.
case "$1" in
  *"://$BINDERY_GIT_HOST'"*|*"://$BINDERY_GIT_HOST/"*|*"@$BINDERY_GIT_HOST'"*) ;;
  *) exit 0 ;;
esac
case "$1" in
  Username*) printf '%s\\n' "$BINDERY_GIT_USERNAME" ;;
  Password*) printf '%s\\n' "$BINDERY_GIT_PASSWORD" ;;
esac
"""

SAFE_CONFIG = (
    "-c", "protocol.allow=never",
    "-c", "protocol.http.allow=always",
    "-c", "protocol.https.allow=always",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "credential.helper=",
    "-c", "http.followRedirects=initial",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
)  # fmt: skip


@contextmanager
def git_environment(credential: GitCredential | None = None) -> Iterator[dict[str, str]]:
    """An environment for git subprocesses, with an askpass script for ``credential``."""
    with tempfile.TemporaryDirectory(prefix="bindery-git-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": "http:https",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_SSH_COMMAND": "/bin/false",
        }
        if credential is not None:
            askpass = Path(home) / "askpass"
            askpass.write_text(_ASKPASS)
            askpass.chmod(0o700)
            env.update(
                GIT_ASKPASS=str(askpass),
                BINDERY_GIT_HOST=credential.host,
                BINDERY_GIT_USERNAME=credential.username,
                BINDERY_GIT_PASSWORD=credential.token,
            )
        yield env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    credential: GitCredential | None = None,
    timeout: float = 60.0,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run ``git <SAFE_CONFIG> <args>`` and return its stdout.

    ``on_line`` receives stderr lines (progress) as they come. Raises BackendError with
    code GIT_FAILED (permanent) on a non-zero exit, GIT_TIMEOUT on timeout and
    BUILD_CANCELLED when ``cancel`` is set. Error messages carry git's own last line,
    which never holds the token (it is not in the URL or argv).
    """
    with git_environment(credential) as env:
        proc = subprocess.Popen(
            ["git", *SAFE_CONFIG, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        stderr_lines: list[str] = []

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                for part in raw.replace("\r", "\n").splitlines():
                    if part.strip():
                        stderr_lines.append(part)
                        if on_line is not None:
                            on_line(part)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stdout_chunks: list[str] = []
        out_reader = threading.Thread(
            target=lambda: stdout_chunks.append(proc.stdout.read() if proc.stdout else ""),
            daemon=True,
        )
        out_reader.start()
        deadline = timeout
        waited = 0.0
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                waited += 0.2
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.wait()
                    raise BackendError("The build was cancelled.", code="BUILD_CANCELLED") from None
                if waited >= deadline:
                    proc.kill()
                    proc.wait()
                    raise BackendError(
                        f"git {args[0]} took longer than {int(timeout)} s.",
                        permanent=False,
                        code="GIT_TIMEOUT",
                    ) from None
        reader.join(5)
        out_reader.join(5)
        if proc.returncode != 0:
            last = next((line for line in reversed(stderr_lines) if line.strip()), "")
            raise BackendError(
                f"git {args[0]} failed: {last.strip()}" if last else f"git {args[0]} failed.",
                code="GIT_FAILED",
            )
        return "".join(stdout_chunks)
