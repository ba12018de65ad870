"""Session backends (``base.SessionBackend``), chosen by ``BINDERY_BACKEND`` like builders.

Nothing in this package's ``__init__`` files imports Django: the hub imports the spawners
(``local.spawner``, ``kubernetes.spawner``) by their dotted paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.sessions.backends.base import SessionBackend

BACKENDS = {
    "local": "apps.sessions.backends.local.backend.LocalSessions",
    "kubernetes": "apps.sessions.backends.kubernetes.backend.KubernetesSessions",
}


def get_session_backend() -> SessionBackend:
    """The backend ``BINDERY_BACKEND`` names. ``BINDERY_SESSION_BACKEND`` (an import path,
    for tests and experiments) overrides it; a ``BINDERY_BACKEND`` that is a builder's import
    path keeps the local sessions. Backends read settings when called, so a new instance
    each time costs nothing."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = getattr(settings, "BINDERY_SESSION_BACKEND", "") or BACKENDS.get(
        str(settings.BINDERY_BACKEND), BACKENDS["local"]
    )
    backend: SessionBackend = import_string(path)()
    return backend
