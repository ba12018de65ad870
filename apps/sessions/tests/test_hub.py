"""HubClient against the real hub: users, servers, tokens, errors, and the portal's scopes."""

from __future__ import annotations

import socket

import pytest
import requests

from apps.sessions.hub import (
    HubClient,
    HubError,
    HubUnavailable,
    server_name_for,
    session_id_for,
)
from apps.sessions.tests.conftest import Hub, Running
from portal.hubconfig import PORTAL_SERVICE


def test_health_names_the_hub_version(hub_client: HubClient) -> None:
    assert hub_client.health() == "jupyterhub 6.1.1"


def test_health_with_a_wrong_token_is_a_hub_error(hub: Hub) -> None:
    with pytest.raises(HubError) as raised:
        HubClient(hub.api_url, "not-the-portal-token").health()
    assert raised.value.code == "HUB_ERROR"
    assert raised.value.status == 502
    assert "not-the-portal-token" not in raised.value.message


def test_unreachable_hub_is_hub_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = HubClient(f"http://127.0.0.1:{port}/hub/api", "token-for-nobody")
        with pytest.raises(HubUnavailable) as raised:
            client.ensure_user("someone")
    assert raised.value.code == "HUB_UNAVAILABLE"
    assert raised.value.status == 503


def test_server_names_are_deterministic_and_dns_safe() -> None:
    assert server_name_for(42) == server_name_for(42) == "s42"
    longest = server_name_for(2**63 - 1)
    assert len(longest) <= 63
    assert longest.isalnum()
    assert longest.islower()
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            server_name_for(bad)


def test_server_names_map_back_to_session_ids() -> None:
    assert session_id_for(server_name_for(42)) == 42
    for foreign in ("", "s", "s0", "s-1", "session-1", "s12x", "S12"):
        assert session_id_for(foreign) is None


# --- users ------------------------------------------------------------------------------------


def test_ensure_and_delete_user_are_safe_to_repeat(hub: Hub, hub_client: HubClient) -> None:
    hub_client.ensure_user("dave")
    hub_client.ensure_user("dave")
    assert hub_client.server_status("dave", "session-9") == "stopped"
    hub_client.delete_user("dave")
    hub_client.delete_user("dave")
    response = requests.get(
        f"{hub.api_url}/users/dave", headers={"Authorization": f"token {hub.token}"}, timeout=5
    )
    assert response.status_code == 404


def test_starting_for_an_unknown_user_is_a_hub_error_with_the_hubs_status(
    hub_client: HubClient,
) -> None:
    with pytest.raises(HubError) as raised:
        hub_client.start_server("nobody-here", "session-1", {})
    assert raised.value.data == {"hub_status": 404}


# --- the running server -----------------------------------------------------------------------


def test_list_servers_reports_ready_with_activity(
    hub_client: HubClient, running_server: Running
) -> None:
    servers = {(s["user"], s["name"]): s for s in hub_client.list_servers()}
    server = servers[("alice", "session-1")]
    assert server["status"] == "ready"
    assert server["ready"] is True
    assert server["pending"] is None
    assert server["url"] == "/user/alice/session-1/"
    assert server["last_activity"] is not None
    assert server["started"] is not None
    assert hub_client.server_status("alice", "session-1") == "ready"


def test_progress_of_a_ready_server_is_the_ready_event(
    hub_client: HubClient, running_server: Running
) -> None:
    events = list(hub_client.iter_progress("alice", "session-1"))
    assert events == [events[-1]]
    assert events[-1]["ready"] is True
    assert events[-1]["url"] == "/user/alice/session-1/"


def test_server_token_opens_the_server_by_header_and_query(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    token, _ = hub_client.create_server_token("alice", "session-1", expires_in=600)
    status_url = f"{hub.public_url}/user/alice/session-1/api/status"
    by_header = requests.get(status_url, headers={"Authorization": f"token {token}"}, timeout=10)
    assert by_header.status_code == 200
    assert "kernels" in by_header.json()
    browser = requests.Session()
    by_query = browser.get(status_url, params={"token": token}, timeout=10)
    assert by_query.status_code == 200
    assert "jupyterhub-user-alice-session-1" in browser.cookies
    assert requests.get(status_url, timeout=10).status_code == 403


def test_revoked_token_is_refused_by_the_hub(hub: Hub, hub_client: HubClient) -> None:
    # (a running server caches token checks for up to 5 minutes: stopping it is what cuts
    # access at once; revoking makes the hub refuse the token from then on)
    hub_client.ensure_user("frank")
    token, token_id = hub_client.create_server_token("frank", "session-8", expires_in=600)
    whoami = f"{hub.api_url}/user"
    auth = {"Authorization": f"token {token}"}
    assert requests.get(whoami, headers=auth, timeout=5).json()["name"] == "frank"
    hub_client.revoke_token("frank", token_id)
    hub_client.revoke_token("frank", token_id)  # already gone: success
    assert requests.get(whoami, headers=auth, timeout=5).status_code == 403


def test_a_server_token_opens_only_its_own_server(
    hub: Hub, hub_client: HubClient, running_server: Running
) -> None:
    hub_client.ensure_user("erin")
    token, _ = hub_client.create_server_token("erin", "session-7", expires_in=600)
    status_url = f"{hub.public_url}/user/alice/session-1/api/status"
    response = requests.get(status_url, headers={"Authorization": f"token {token}"}, timeout=10)
    assert response.status_code == 403


def test_starting_a_running_server_again_is_refused(
    hub_client: HubClient, running_server: Running
) -> None:
    with pytest.raises(HubError) as raised:
        hub_client.start_server("alice", "session-1", running_server.launch.user_options)
    assert "already running" in raised.value.message


# --- the portal's scopes ----------------------------------------------------------------------

EXPECTED_SCOPES = {
    "admin:users",
    "admin:auth_state",
    "users",
    "read:users",
    "list:users",
    "users:activity",
    "read:users:name",
    "read:users:groups",
    "read:users:activity",
    "read:roles:users",
    "delete:users",
    "read:servers",
    "start:servers",
    "delete:servers",
    "tokens",
    "read:tokens",
}


def test_portal_token_holds_only_the_minimal_scopes(hub: Hub) -> None:
    me = requests.get(
        f"{hub.api_url}/user", headers={"Authorization": f"token {hub.token}"}, timeout=5
    ).json()
    assert me["kind"] == "service"
    assert me["name"] == PORTAL_SERVICE
    assert me["admin"] is False
    assert set(me["scopes"]) == EXPECTED_SCOPES


def test_portal_token_cannot_use_a_users_server(hub: Hub, running_server: Running) -> None:
    response = requests.get(
        f"{hub.public_url}/user/alice/session-1/api/contents/",
        headers={"Authorization": f"token {hub.token}"},
        timeout=10,
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/services", None),  # other services' data
        ("GET", "/groups", None),
        ("GET", "/proxy", None),
        ("POST", "/shutdown", None),
        ("PATCH", "/users/alice", {"admin": True}),  # cannot make anyone an admin
    ],
)
def test_portal_token_is_refused_outside_its_scopes(
    hub: Hub, running_server: Running, method: str, path: str, body: object
) -> None:
    response = requests.request(
        method,
        f"{hub.api_url}{path}",
        headers={"Authorization": f"token {hub.token}"},
        json=body,
        timeout=5,
    )
    assert response.status_code == 403
    assert hub.process.poll() is None  # the hub is still up


def test_portal_cannot_read_server_state(hub: Hub, running_server: Running) -> None:
    # admin:server_state (the spawner's pid, cgroups) is not the portal's business
    response = requests.get(
        f"{hub.api_url}/users/alice/servers/session-1",
        headers={"Authorization": f"token {hub.token}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert "state" not in response.json()
