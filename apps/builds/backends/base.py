"""The builder interface: (resolved repo, credentials) → a runnable environment.

Backends take plain dataclasses, not models, so they test without a database. They stream
log lines through ``LogSink`` while they work and raise ``portal.errors.BackendError``
(``permanent=True`` fails the build, ``False`` lets the task retry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from apps.repos.types import GitCredential, ResolvedRepo


class LogSink(Protocol):
    def __call__(self, line: str, *, phase: str = "building", stream: str = "stdout") -> None:
        """Record one log line. ``phase`` is one of fetching, building, built."""


@dataclass(frozen=True)
class BuildRequest:
    build_id: int
    repo: ResolvedRepo
    credentials: tuple[GitCredential, ...] = ()
    timeout: float = 1200.0  # seconds, for the whole build
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class BuildResult:
    """What a finished build produced; stored on the Build row and shown on its receipt."""

    environment_key: str  # hash of dependency files, python version, base packages, builder
    environment_path: str  # local: the virtualenv; kubernetes: the image name
    checkout_path: str  # local: the checkout at the resolved ref (what sessions copy)
    python_version: str  # "3.11.7"
    config_files: tuple[str, ...]  # e.g. ("binder/requirements.txt", "binder/postBuild")
    packages: tuple[tuple[str, str], ...]  # (name, version), sorted
    warnings: tuple[str, ...] = ()
    reused: bool = False  # True when an existing environment was used, nothing installed
    start_script: str = ""  # relative path of the repo's `start`, if any
    durations: dict[str, float] = field(default_factory=dict)  # fetch, install, postbuild...


class Builder(Protocol):
    """Turns a BuildRequest into a BuildResult.

    Safe to call twice for the same request: a second call reuses what the first made.
    Two calls at once for the same environment key produce one environment.
    """

    def build(self, request: BuildRequest, log: LogSink) -> BuildResult: ...

    def environment_exists(self, result: BuildResult) -> bool:
        """Whether the environment of an earlier result is still there (not pruned)."""
        ...

    def mark_used(self, result: BuildResult) -> None:
        """Record that a session starts from ``result`` now (least-recently-used pruning)."""
        ...


def get_builder() -> Builder:
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = {
        "local": "apps.builds.backends.local.LocalBuilder",
        "kubernetes": "apps.builds.backends.kubernetes.builder.KubernetesBuilder",
    }.get(settings.BINDERY_BACKEND, settings.BINDERY_BACKEND)
    builder: Callable[[], Builder] = import_string(path)
    return builder()


def builder_version() -> str:
    """A label for /versions: the backend and its version."""
    from django.conf import settings

    if settings.BINDERY_BACKEND == "local":
        from apps.builds.backends import local

        return f"bindery-local:{getattr(local, 'BUILDER_VERSION', 'unknown')}"
    if settings.BINDERY_BACKEND == "kubernetes":
        from apps.builds.backends.kubernetes import names

        return f"bindery-kubernetes:{names.BUILDER_VERSION} {settings.BINDERY_K8S_BUILD_IMAGE}"
    return str(settings.BINDERY_BACKEND)
