"""System checks (``manage.py check``, and every process start): the build sandbox, and the
kubernetes backend's settings when it is in use."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from apps import sandbox
from apps.builds.backends.kubernetes.options import problems  # imports no kubernetes client


@checks.register(checks.Tags.security)
def sandbox_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """BINDERY_SANDBOX must be on or off; off is said loudly; on where this machine cannot
    sandbox is said too (builds and sessions are then refused, not run unsandboxed)."""
    try:
        mode = sandbox.normalise_mode(str(settings.BINDERY_SANDBOX))
    except ValueError as exc:
        return [checks.Error(str(exc), id="bindery.E010")]
    if mode == "off":
        return [
            checks.Warning(
                "BINDERY_SANDBOX is off: code from repositories (setup.py, postBuild, start, "
                "notebooks) runs as root with no sandbox and can read and change everything "
                "on this machine.",
                hint="Set BINDERY_SANDBOX=on (the default) unless every user is trusted.",
                id="bindery.W010",
            )
        ]
    problem = sandbox.probe()
    if problem:
        return [
            checks.Warning(
                f"The sandbox cannot run here ({problem}): builds and sessions will be refused "
                "with SANDBOX_UNAVAILABLE.",
                hint="Run as root with bubblewrap and setpriv installed (bin/setup does).",
                id="bindery.W011",
            )
        ]
    return []


@checks.register()
def kubernetes_check(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With BINDERY_BACKEND=kubernetes: every builder setting is usable (bindery.E020, one
    error each), and what is allowed but probably unmeant is said (W020: pushing without
    credentials; W021: a build timeout the task limit cuts short). Contacts nothing."""
    if settings.BINDERY_BACKEND != "kubernetes":
        return []
    found: list[checks.CheckMessage] = [
        checks.Error(problem, hint="See .env.example, 'Kubernetes backend'.", id="bindery.E020")
        for problem in problems(settings)
    ]
    if not settings.BINDERY_REGISTRY_PUSH_SECRET:
        found.append(
            checks.Warning(
                "BINDERY_REGISTRY_PUSH_SECRET is empty: build pods push images with no "
                "credentials, which only a registry open to anonymous pushes accepts.",
                hint="Name a kubernetes.io/dockerconfigjson Secret with push access.",
                id="bindery.W020",
            )
        )
    k8s_timeout = settings.BINDERY_K8S_BUILD_TIMEOUT
    if isinstance(k8s_timeout, int | float) and k8s_timeout > settings.BINDERY_BUILD_TIMEOUT:
        found.append(
            checks.Warning(
                f"BINDERY_K8S_BUILD_TIMEOUT ({k8s_timeout} s) is longer than "
                f"BINDERY_BUILD_TIMEOUT ({settings.BINDERY_BUILD_TIMEOUT} s), which bounds "
                "every build: builds stop at the shorter one.",
                hint="Raise BINDERY_BUILD_TIMEOUT too.",
                id="bindery.W021",
            )
        )
    return found
