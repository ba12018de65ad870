"""The signed launch contract between the portal and the hub: pure, for every backend.

The portal (web or worker) signs what a session should run with :func:`sign_user_options`
and sends it as the named server's ``user_options``; the hub's spawner accepts only options
verified by :func:`verify_user_options` with the same key. Nothing here imports JupyterHub,
Django or ``portal``: the web and the worker sign without loading the hub, and the hub
verifies without loading Django. Each backend's payload (what to run: paths for ``local``,
an image and claims for ``kubernetes``) is its own dataclass under
``apps.sessions.backends.<name>.options``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

_KEY_CONTEXT = b"bindery/spawner/user-options/v1"
DEFAULT_TTL = 300  # seconds a signed launch stays valid: the portal signs right before starting
MOUNT_ROOT = "persistent"  # volumes are mounted under this, relative to the working directory
BINDER_ENV = (
    "binder_repo_url",
    "binder_ref_url",
    "binder_launch_host",
    "binder_request",
    "binder_persistent_request",
)


class InvalidLaunchOptions(ValueError):
    """``user_options`` the hub must refuse (the hub answers 400 with the message).

    Not a ``portal.errors.BinderyError``: this module runs inside the hub, which must not
    import ``portal`` (its package loads Celery and Django settings). The portal never sees
    this type; it sees the hub's 400 as ``apps.sessions.hub.HubError``.
    """

    code = "INVALID_LAUNCH_OPTIONS"


def signing_key(hub_token: str) -> bytes:
    """The HMAC key for launch options, derived from the portal's hub service token.

    A separate key (not the token itself) so that a leaked signature never helps guess the
    token, and rotating the token rotates the key.
    """
    return hmac.new(hub_token.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def sign_user_options(
    payload: dict[str, Any], key: bytes, *, ttl: int = DEFAULT_TTL, now: float | None = None
) -> dict[str, str]:
    """The ``user_options`` for a hub start: the payload as canonical JSON, its expiry and an
    HMAC-SHA256 signature. The JSON text itself is carried, so nothing depends on how the hub
    stores and reloads the options."""
    issued = time.time() if now is None else now
    body = {**payload, "expires_at": int(issued + ttl)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return {"payload": text, "signature": signature}


def verify_user_options(
    user_options: Any, key: bytes, *, now: float | None = None
) -> dict[str, Any]:
    """The payload of signed ``user_options``; raises InvalidLaunchOptions when unsigned,
    tampered with, signed with another key, or expired."""
    if not isinstance(user_options, dict) or set(user_options) != {"payload", "signature"}:
        raise InvalidLaunchOptions("launch options must be signed by the portal")
    text, signature = user_options["payload"], user_options["signature"]
    if not isinstance(text, str) or not isinstance(signature, str) or not key:
        raise InvalidLaunchOptions("launch options must be signed by the portal")
    expected = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidLaunchOptions("the launch options' signature is not valid")
    body = json.loads(text)
    expires_at = body.pop("expires_at", None) if isinstance(body, dict) else None
    if not isinstance(expires_at, int):
        raise InvalidLaunchOptions("launch options carry no expiry")
    if expires_at <= (time.time() if now is None else now):
        raise InvalidLaunchOptions("the launch options have expired")
    assert isinstance(body, dict)
    return body


def check_fields(data: Any, known: set[str], required: tuple[str, ...]) -> dict[str, Any]:
    """``data`` as a dict with only ``known`` keys and the ``required`` ones non-empty
    strings; raises InvalidLaunchOptions (shared by the backends' ``from_dict``)."""
    if not isinstance(data, dict):
        raise InvalidLaunchOptions("launch options must be an object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidLaunchOptions(f"unknown launch options: {', '.join(unknown)}")
    for name in required:
        if not isinstance(data.get(name), str) or not data[name]:
            raise InvalidLaunchOptions(f"{name} is required")
    return data


def check_int(data: dict[str, Any], name: str, default: int, least: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InvalidLaunchOptions(f"{name} must be an integer of at least {least}")
    return value


def check_cpu(data: dict[str, Any]) -> None:
    cpu = data.get("cpu")
    if cpu is not None and (
        not isinstance(cpu, int | float) or isinstance(cpu, bool) or not 0 < cpu <= 1024
    ):
        raise InvalidLaunchOptions("cpu must be a positive number")


def check_strings(data: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(data.get(name, ""), str):
            raise InvalidLaunchOptions(f"{name} must be a string")


def check_pairs(data: dict[str, Any], name: str) -> tuple[tuple[str, str], ...]:
    """A list of ``[str, str]`` pairs (volumes: ``[source, mount]``) as a tuple of tuples."""
    pairs = data.get(name, [])
    if not isinstance(pairs, list | tuple) or not all(
        isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(p, str) for p in v)
        for v in pairs
    ):
        raise InvalidLaunchOptions(f"{name} must be a list of [source, mount] pairs")
    return tuple((a, b) for a, b in pairs)
