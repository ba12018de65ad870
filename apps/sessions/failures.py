"""What a failed or refused launch tells people: one sentence, the step that failed, and
the ways on. Pages (partials/error_panel.html) and the launch script render the same
``Failure``; the stable code goes beside the sentence, small, for support."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from apps.accounts.redirects import with_next
from apps.repos.names import RepoName

# The launch's steps, in order (apps.sessions.views.LAUNCH_PHASES).
STEPS = ("waiting", "fetching", "building", "launching", "ready")

_FETCHING = {
    "PROVIDER_UNKNOWN",
    "SPEC_INVALID",
    "REF_INVALID",
    "URL_INVALID",
    "URL_SCHEME_FORBIDDEN",
    "URL_LOCAL_PATH",
    "URL_CREDENTIALS_FORBIDDEN",
    "HOST_FORBIDDEN",
    "HOST_UNRESOLVABLE",
    "REDIRECT_FORBIDDEN",
    "SPEC_BANNED",
    "SPEC_NOT_ALLOWED",
    "REPO_NOT_FOUND_OR_PRIVATE",
    "REPO_REDIRECTED",
    "REF_NOT_FOUND",
    "RECORD_NOT_FOUND",
    "PROVIDER_UNAVAILABLE",
    "PROVIDER_BAD_RESPONSE",
    "REPO_INPUT_UNRECOGNISED",
    "INPUT_TOO_LONG",
    "INPUT_CONTROL_CHARACTER",
    "CREDENTIAL_GONE",
    "CREDENTIAL_UNREADABLE",
}
_WAITING = {
    "QUOTA_EXCEEDED",
    "BUILD_QUOTA_EXCEEDED",
    "QUEUE_UNAVAILABLE",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "LOGIN_REQUIRED",
    "URLPATH_INVALID",
}
_LAUNCHING = {
    "LAUNCH_FAILED",
    "LAUNCH_TIMEOUT",
    "LAUNCH_LOST",
    "HUB_UNAVAILABLE",
    "HUB_ERROR",
    "HUB_USER_INVALID",
}
_INPUT = {
    "PROVIDER_UNKNOWN", "SPEC_INVALID", "REF_INVALID", "URL_INVALID", "URL_SCHEME_FORBIDDEN",
    "URL_LOCAL_PATH", "URL_CREDENTIALS_FORBIDDEN", "REPO_INPUT_UNRECOGNISED", "INPUT_TOO_LONG",
    "INPUT_CONTROL_CHARACTER", "URLPATH_INVALID",
}  # fmt: skip
_TITLES = {
    "fetching": "This repository could not be fetched",
    "waiting": "The launch could not start",
    "building": "The environment could not be built",
    "launching": "The server did not start",
}


@dataclass(frozen=True)
class Action:
    label: str
    url: str
    kind: str  # "retry", "build", "stop", "sign-in", "team", "credential"


@dataclass(frozen=True)
class Failure:
    title: str
    message: str
    code: str
    step: str
    actions: list[Action] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The kubernetes builder's own codes (apps.builds.backends.kubernetes): its pods
# (BUILD_POD_*, under BUILD_), the registry it asks first, the API refusing a manifest, a
# repository it cannot build.
_BUILD_PREFIXES = ("BUILD_", "POSTBUILD", "CONFIG_", "NEEDS_", "UV_", "REGISTRY_")
_BUILDING = {"RUNTIME_INVALID", "BINDER_DIR_CONFLICT", "SANDBOX_UNAVAILABLE", "K8S_REJECTED",
             "UNSUPPORTED_BY_BACKEND"}  # fmt: skip


def step_of(code: str, *, build_failed: bool = False) -> str:
    """The step a failure with ``code`` belongs to (a failed build's: building).

    ``K8S_*`` codes come from both sides: a failed build's are building; a session's own
    (K8S_UNAVAILABLE, K8S_FORBIDDEN, K8S_MISCONFIGURED: its volumes' claims, made as its
    server starts) are launching."""
    if build_failed or code.startswith(_BUILD_PREFIXES) or code in _BUILDING:
        return "building" if code not in _WAITING else "waiting"
    if code in _FETCHING:
        return "fetching"
    if code in _LAUNCHING or code.startswith("K8S_"):
        return "launching"
    return "waiting"


def retry_url(name: RepoName, team: str = "") -> str:
    """The launch form, filled in with this repository, ref and team."""
    params = {"repository": name.url or name.place, "ref": name.ref if name.ref != "HEAD" else ""}
    if team:
        params["team"] = team
    return reverse("repo-launch") + "?" + urlencode(params)


def failure_for(
    code: str,
    message: str,
    *,
    name: RepoName,
    signed_in: bool,
    login_next: str = "",
    team: str = "",
    build_id: int | None = None,
    build_failed: bool = False,
    step: str = "",
) -> Failure:
    """The failure page's content for ``code``; ``message`` is the error's sentence."""
    step = step or step_of(code, build_failed=build_failed)
    actions: list[Action] = []
    if code in ("QUOTA_EXCEEDED", "BUILD_QUOTA_EXCEEDED"):
        title = "You are at your limit"
        if code == "QUOTA_EXCEEDED" and signed_in:
            actions.append(Action("Stop a session", reverse("sessions"), "stop"))
        if code == "BUILD_QUOTA_EXCEEDED":
            actions.append(Action("See your builds", reverse("builds"), "build"))
    elif code in _INPUT:
        title = "This link cannot be launched as it is"
    else:
        title = _TITLES.get(step, "The launch failed")
    if not signed_in and code in ("LOGIN_REQUIRED", "REPO_NOT_FOUND_OR_PRIVATE", "QUOTA_EXCEEDED"):
        actions.append(
            Action("Sign in", with_next(reverse("account_login"), login_next), "sign-in")
        )
    if build_id is not None and step in ("building", "launching"):
        actions.append(
            Action("View the build and its log", reverse("build", args=[build_id]), "build")
        )
    if code not in ("QUOTA_EXCEEDED", "BUILD_QUOTA_EXCEEDED", "SPEC_BANNED", "LOGIN_REQUIRED"):
        actions.insert(0, Action("Edit and retry", retry_url(name, team), "retry"))
    if code == "REPO_NOT_FOUND_OR_PRIVATE" and signed_in:
        host = name.place.split("/", 1)[0]
        actions.append(
            Action(
                "Add a credential for a private repository",
                reverse("credentials") + "?" + urlencode({"host": host}),
                "credential",
            )
        )
    if team and code in ("QUOTA_EXCEEDED", "PERMISSION_DENIED"):
        actions.append(Action("Ask the team admin", reverse("team", args=[team]), "team"))
    return Failure(
        title=title, message=_without_code(message, code), code=code, step=step, actions=actions
    )


def _without_code(message: str, code: str) -> str:
    """The sentence alone: some stored messages carry their code in brackets."""
    return message.replace(f" ({code})", "").replace(f"({code})", "").strip()


def phase_states(
    phases: Sequence[tuple[str, str]], current: str, failed: bool
) -> list[dict[str, str]]:
    """Each step of the bar with its state: done, current, failed or ahead."""
    values = [value for value, _ in phases]
    index = values.index(current) if current in values else 0
    rows = []
    for i, (value, label) in enumerate(phases):
        state = "done" if i < index else ("failed" if failed else "current") if i == index else ""
        rows.append({"value": value, "label": label, "state": state})
    return rows


def build_failed_step(build: Any) -> str:
    """The step a failed build stopped in: the phase of its last log line (the row's own
    phase says only "failed")."""
    last = build.log_lines.order_by("-n").values_list("phase", flat=True).first()
    if last in ("fetching", "building"):
        return str(last)
    return "fetching" if build.error_code in _FETCHING else "building"
