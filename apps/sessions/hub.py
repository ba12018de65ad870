"""The portal's client for JupyterHub's REST API (the hub's own port, the portal's token).

Every call has a short timeout; a hub that cannot be reached raises :class:`HubUnavailable`
(503), a hub that answers with an error raises :class:`HubError` (502) carrying the hub's
message. Create-if-missing and delete-if-present calls treat "already exists" and "not
found" as success, so tasks calling them are safe to run twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, TypedDict
from urllib.parse import quote

import requests
from django.conf import settings

from portal.errors import BinderyError

ServerStatus = Literal["ready", "pending", "stopped"]
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
PROGRESS_READ_TIMEOUT = 30.0  # the hub sends a keepalive comment every 8 s
PAGE_SIZE = 200
_SERVER_NAME = re.compile(r"^s([1-9][0-9]{0,61})$")


class HubUnavailable(BinderyError):
    code = "HUB_UNAVAILABLE"
    status = 503
    default_message = "The notebook hub is not reachable right now; try again shortly."


class HubError(BinderyError):
    code = "HUB_ERROR"
    status = 502
    default_message = "The notebook hub refused the request."


def server_name_for(session_id: int) -> str:
    """The hub server name of a session: deterministic, DNS-safe, at most 63 characters."""
    if isinstance(session_id, bool) or not isinstance(session_id, int) or session_id < 1:
        raise ValueError(f"session ids are positive integers, not {session_id!r}")
    return f"s{session_id}"


def session_id_for(server_name: str) -> int | None:
    """The session id a server name was derived from; None for names the portal never uses."""
    match = _SERVER_NAME.match(server_name)
    return int(match.group(1)) if match else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class HubServer(TypedDict):
    """One named server as the hub sees it."""

    user: str
    name: str
    status: ServerStatus
    ready: bool
    pending: str | None  # the hub's pending action: "spawn", "stop", ... or None
    url: str | None  # path on the hub's public URL, e.g. /user/u1/s3/
    started: datetime | None
    last_activity: datetime | None


def _server(user: str, model: dict[str, Any]) -> HubServer:
    status: ServerStatus
    if model.get("ready"):
        status = "ready"
    elif model.get("pending"):
        status = "pending"
    else:
        status = "stopped"
    return HubServer(
        user=user,
        name=str(model.get("name", "")),
        status=status,
        ready=status == "ready",
        pending=model.get("pending") or None,
        url=model.get("url") or None,
        started=_parse_time(model.get("started")),
        last_activity=_parse_time(model.get("last_activity")),
    )


class HubClient:
    """JupyterHub's REST API with the portal's service token.

    ``api_url`` ends in ``/hub/api`` (settings.BINDERY_HUB_API_URL by default).
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = READ_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.api_url = (api_url or settings.BINDERY_HUB_API_URL).rstrip("/")
        self._token = token or settings.BINDERY_HUB_TOKEN
        self.timeout = timeout
        self._http = session or requests.Session()

    def __repr__(self) -> str:  # never the token
        return f"HubClient({self.api_url!r})"

    # -- plumbing ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> requests.Response:
        try:
            response = self._http.request(
                method,
                f"{self.api_url}{path}",
                json=json_body,
                params=params,
                headers={"Authorization": f"token {self._token}", **(headers or {})},
                timeout=(CONNECT_TIMEOUT, read_timeout or self.timeout),
                stream=stream,
                allow_redirects=False,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HubUnavailable() from exc
        if response.status_code not in ok:
            message = _hub_message(response)
            response.close()
            raise HubError(
                f"The notebook hub answered {response.status_code}: {message}",
                hub_status=response.status_code,
            )
        return response

    @staticmethod
    def _user(name: str) -> str:
        return quote(name, safe="")

    def _server(self, user: str, server_name: str) -> str:
        return f"/users/{self._user(user)}/servers/{quote(server_name, safe='')}"

    # -- health --------------------------------------------------------------------------------

    def health(self) -> str:
        """``"jupyterhub <version>"`` when the hub answers and accepts the portal's token;
        raises HubUnavailable or HubError."""
        version = self._request("GET", "/").json().get("version", "?")
        whoami = self._request("GET", "/user").json()
        if whoami.get("kind") != "service":
            raise HubError("The portal's hub token does not belong to the portal's service.")
        return f"jupyterhub {version}"

    # -- users ---------------------------------------------------------------------------------

    def ensure_user(self, name: str) -> None:
        """Create the hub user unless it exists. Safe to run twice."""
        self._request("POST", f"/users/{self._user(name)}", ok=(201, 409))

    def delete_user(self, name: str) -> None:
        """Delete the hub user (stopping its servers); a missing user is success."""
        self._request("DELETE", f"/users/{self._user(name)}", ok=(204, 404))

    # -- servers -------------------------------------------------------------------------------

    def start_server(self, user: str, server_name: str, user_options: dict[str, Any]) -> None:
        """Ask the hub to start a named server. Returns once the hub accepted the request
        (it answers at once: follow :meth:`iter_progress` or poll :meth:`server_status`).
        Invalid launch options are a HubError with the hub's 400 message; a server already
        starting is accepted; one already running is a HubError (400)."""
        self._request(
            "POST",
            self._server(user, server_name),
            ok=(201, 202),
            json_body={"user_options": user_options},
        )

    def iter_progress(self, user: str, server_name: str) -> Iterator[dict[str, Any]]:
        """The hub's progress events for a starting server, as dicts (``progress``,
        ``message``, and finally ``ready: True`` with ``url`` or ``failed: True``). Ends after
        the final event or when the hub closes the stream."""
        response = self._request(
            "GET",
            f"{self._server(user, server_name)}/progress",
            headers={"Accept": "text/event-stream"},
            stream=True,
            read_timeout=PROGRESS_READ_TIMEOUT,
        )
        with response:
            try:
                for line in response.iter_lines(chunk_size=None, decode_unicode=True):
                    if not line or not line.startswith("data:"):
                        continue  # blank separators and ":keepalive" comments
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise HubUnavailable() from exc

    def server_status(self, user: str, server_name: str) -> ServerStatus:
        """``ready``, ``pending`` (starting or stopping) or ``stopped``; a missing user or
        server is ``stopped``."""
        response = self._request("GET", self._server(user, server_name), ok=(200, 404))
        if response.status_code == 404:
            return "stopped"
        return _server(user, response.json())["status"]

    def stop_server(self, user: str, server_name: str, *, remove: bool = True) -> bool:
        """Stop the server (and forget it when ``remove``). True when it is already stopped,
        False when the hub is still stopping it (poll :meth:`server_status`). A missing user
        or server is success."""
        response = self._request(
            "DELETE",
            self._server(user, server_name),
            ok=(202, 204, 404),
            json_body={"remove": remove},
        )
        return response.status_code != 202

    def list_servers(self) -> list[HubServer]:
        """Every user's active (ready or pending) servers, for reconciling with the portal."""
        servers: list[HubServer] = []
        offset = 0
        while True:
            page = self._request(
                "GET",
                "/users",
                params={"state": "active", "offset": offset, "limit": PAGE_SIZE},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            ).json()
            for user in page.get("items", []):
                for model in (user.get("servers") or {}).values():
                    servers.append(_server(user["name"], model))
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return servers
            offset = int(following["offset"])

    # -- tokens --------------------------------------------------------------------------------

    def create_server_token(self, user: str, server_name: str, expires_in: int) -> tuple[str, str]:
        """A token that opens only this server: ``(token, token_id)``. The secret is never
        logged; keep only the id to revoke it."""
        body = {
            "scopes": [f"access:servers!server={user}/{server_name}"],
            "expires_in": int(expires_in),
            "note": f"bindery session server {server_name}",
        }
        data = self._request(
            "POST", f"/users/{self._user(user)}/tokens", ok=(200, 201), json_body=body
        ).json()
        return str(data["token"]), str(data["id"])

    def revoke_token(self, user: str, token_id: str) -> None:
        """Revoke a token by id; an unknown token or user is success."""
        path = f"/users/{self._user(user)}/tokens/{quote(token_id, safe='')}"
        self._request("DELETE", path, ok=(204, 404))


def _hub_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.reason or "no message"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return response.reason or "no message"
