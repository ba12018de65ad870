"""BINDERY_SERVER_STARTS_AT_ONCE: the hub starts at most that many servers at once and tells
the others they wait their turn (BinderySpawner.starts_at_once, StartSlots), through a real
JupyterHub started with a bound of one, and the default hub (a bound of twice the cores) as
the control."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.sessions.tests.conftest import Hub, _start_hub, _stop_hub, launch_maker

WAITING = "Other servers are starting on this machine"


@pytest.fixture(scope="module")
def one_at_a_time(single_user_env: Path) -> Iterator[Hub]:
    root = single_user_env.parent.parent
    started = _start_hub(
        root, single_user_env, "hub-one-start", {"BINDERY_SERVER_STARTS_AT_ONCE": "1"}
    )
    yield started
    _stop_hub(started)


def start_together(hub: Hub, users: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Start a server for each of ``users`` at once; each one's progress events to the end."""
    make, client = launch_maker(hub), hub.client()
    launches = {user: make(user, "slot") for user in users}
    for user in users:
        client.ensure_user(user)
    events: dict[str, list[dict[str, Any]]] = {user: [] for user in users}

    def follow(user: str) -> None:
        events[user].extend(hub.client().iter_progress(user, "slot"))

    for user in users:
        client.start_server(user, "slot", launches[user].user_options)
    threads = [threading.Thread(target=follow, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return events


def stop_all(hub: Hub, users: list[str]) -> None:
    client = hub.client()
    for user in users:
        client.stop_server(user, "slot")


def test_a_second_server_waits_for_the_first_to_be_up(one_at_a_time: Hub) -> None:
    users = ["slot-a", "slot-b"]
    try:
        events = start_together(one_at_a_time, users)
        for user in users:
            assert events[user] and events[user][-1].get("ready"), events[user]
        waited = [u for u in users if any(WAITING in str(e.get("message")) for e in events[u])]
        assert len(waited) == 1, events  # the one that came second, and told so first
        second = waited[0]
        first = next(u for u in users if u != second)
        # after the hub's own "Server requested": the wait, then the start
        messages = [str(e.get("message")) for e in events[second]][1:]
        assert messages[0].startswith(WAITING), messages
        assert messages[1] == "Preparing your copy of the repository", messages
        # the hub's own log, one process writing in order: the first server was listening
        # before the second was started
        log = one_at_a_time.log_path.read_text()
        listening = log.index(f"{first}:slot is listening after")
        assert log.index(f"Starting {second}:slot (") > listening
    finally:
        stop_all(one_at_a_time, users)


def test_under_the_bound_nobody_waits(hub: Hub) -> None:
    users = ["slots-c", "slots-d"]  # the default hub: twice the cores, at least 2
    try:
        events = start_together(hub, users)
        for user in users:
            assert events[user][-1].get("ready"), events[user]
            assert not any(WAITING in str(e.get("message")) for e in events[user])
    finally:
        stop_all(hub, users)
