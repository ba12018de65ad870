"""A real git server for tests: `git http-backend` behind a small threaded WSGI wrapper on
127.0.0.1. Repositories under ``private/`` require HTTP basic auth.

Nothing here is faked: clone, fetch, ls-remote and push speak git's smart HTTP protocol.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Repo:
    name: str
    url: str
    path: Path
    work: Path

    @property
    def head(self) -> str:
        return _git(self.work, "rev-parse", "HEAD").strip()


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
        **(env or {}),
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=full_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class GitServer:
    """Serves bare repositories from a temporary directory.

    ``requests`` lists (method, path, authorization header present) for every request, so
    tests can assert what reached the server.
    """

    username = "reader"
    token = "s3cret-token-7f9c2a41d8e6b5"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bindery-gitserver-"))
        (self.root / "repos").mkdir()
        self.requests: list[tuple[str, str, bool]] = []
        self._httpd = make_server(
            "127.0.0.1", 0, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _authorized(self, environ: dict[str, Any]) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        expected = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return header == f"Basic {expected}"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        self.requests.append(
            (environ["REQUEST_METHOD"], path, bool(environ.get("HTTP_AUTHORIZATION")))
        )
        if path.startswith("/private/") and not self._authorized(environ):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")],
            )
            return [b"authentication required\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root / "repos"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": self.username if path.startswith("/private/") else "",
            "HTTP_GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=cgi_env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = "200 OK"
        headers = []
        for line in head.decode().split("\r\n"):
            if not line:
                continue
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            else:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]

    def create_repo(
        self, name: str, files: dict[str, str | bytes], *, executable: Iterable[str] = ()
    ) -> Repo:
        """A bare repo at ``/<name>.git`` (``private/x`` needs auth) with one commit."""
        bare = self.root / "repos" / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git(bare.parent, "init", "--bare", "-q", bare.name)
        _git(bare, "config", "http.receivepack", "true")
        work = self.root / "work" / name
        work.mkdir(parents=True)
        _git(work, "init", "-q")
        _git(work, "remote", "add", "origin", str(bare))
        repo = Repo(name=name, url=f"{self.base_url}/{name}.git", path=bare, work=work)
        self.commit(repo, files, executable=executable, message="initial")
        return repo

    def commit(
        self,
        repo: Repo,
        files: Mapping[str, str | bytes | None],
        *,
        message: str = "change",
        executable: Iterable[str] = (),
        branch: str = "main",
        tag: str | None = None,
    ) -> str:
        """Write (or, for None, delete) files, commit, push; return the new commit sha."""
        for rel, content in files.items():
            target = repo.work / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        for rel in executable:
            (repo.work / rel).chmod(0o755)
        _git(repo.work, "checkout", "-q", "-B", branch)
        _git(repo.work, "add", "-A")
        _git(repo.work, "commit", "-q", "--allow-empty", "-m", message)
        _git(repo.work, "push", "-q", "origin", f"{branch}:{branch}")
        if tag:
            _git(repo.work, "tag", tag)
            _git(repo.work, "push", "-q", "origin", f"refs/tags/{tag}")
        return repo.head
