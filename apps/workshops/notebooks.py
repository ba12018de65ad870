"""A read-only look at an attendee's files for their instructor: the Jupyter contents API
of the attendee's running server, read through the hub's proxy with the server's own
token (loopback on the local backend). Names, types, sizes and times only; never content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from apps.sessions.models import Session
from apps.sessions.services import session_token
from portal.errors import ServiceUnavailable

TIMEOUT = 5.0
MAX_ENTRIES = 500


class FilesUnavailable(ServiceUnavailable):
    code = "FILES_UNAVAILABLE"
    default_message = "The attendee's server did not answer; try again in a moment."


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    type: str  # "notebook", "file" or "directory"
    size: int | None
    last_modified: datetime | None


def clean_path(text: str) -> str:
    """A path inside the server's root, as segments: no ``..``, ``.`` or empty parts."""
    parts = [p for p in text.replace("\\", "/").split("/") if p and p not in (".", "..")]
    return "/".join(parts)[:1000]


def parents(path: str) -> list[tuple[str, str]]:
    """(label, path) of each directory above ``path`` and of ``path`` itself, for a
    breadcrumb, starting with the server's root."""
    crumbs = [("files", "")]
    parts = path.split("/") if path else []
    for i, part in enumerate(parts):
        crumbs.append((part, "/".join(parts[: i + 1])))
    return crumbs


def server_prefix(session: Session) -> str:
    """``<scheme>://<host>/user/<hub user>/<server>/`` of the session's server."""
    url = urlsplit(session.url)
    user, server = quote(session.hub_user, safe=""), quote(session.server_name, safe="")
    return f"{url.scheme}://{url.netloc}/user/{user}/{server}/"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def list_files(session: Session, path: str = "") -> list[Entry]:
    """The directory ``path`` of the session's server, directories first. Raises
    FilesUnavailable when the server cannot be read (not running, no token, an error)."""
    token = session_token(session)
    if session.status != Session.Status.READY or not session.url or not token:
        raise FilesUnavailable("The attendee's server is not running.")
    url = server_prefix(session) + "api/contents/" + quote(clean_path(path))
    try:
        response = requests.get(
            url, params={"content": "1"}, headers={"Authorization": f"token {token}"},
            timeout=TIMEOUT, allow_redirects=False,
        )  # fmt: skip
    except requests.RequestException:
        raise FilesUnavailable() from None
    if response.status_code == 404:
        raise FilesUnavailable("There is no such folder in the attendee's server.")
    if response.status_code != 200:
        raise FilesUnavailable(
            f"The attendee's server answered {response.status_code}; try again in a moment."
        )
    try:
        model = response.json()
    except ValueError:
        raise FilesUnavailable() from None
    content = model.get("content") if isinstance(model, dict) else None
    if model.get("type") != "directory" or not isinstance(content, list):
        raise FilesUnavailable("That is a file, not a folder.")
    entries = [
        Entry(name=str(item.get("name", "")), path=str(item.get("path", "")),
              type=str(item.get("type", "file")),
              size=item.get("size") if isinstance(item.get("size"), int) else None,
              last_modified=_time(item.get("last_modified")))
        for item in content[:MAX_ENTRIES] if isinstance(item, dict)
    ]  # fmt: skip
    return sorted(entries, key=lambda e: (e.type != "directory", e.name.lower()))
