"""Celery entry points for sessions: thin, taking ids, safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.sessions import hub, services


@shared_task(
    acks_late=True,
    soft_time_limit=int(services.LAUNCH_TIMEOUT) + 30,
    time_limit=int(services.LAUNCH_TIMEOUT) + 60,
)
def launch_session(session_id: int) -> str | None:
    """Start the session's server on the hub and follow it to ready."""
    return services.start_on_hub(session_id)


@shared_task(bind=True, acks_late=True, max_retries=None, soft_time_limit=100, time_limit=120)
def stop_session(self: Any, session_id: int) -> str | None:
    """Stop the session's server; retried while the hub is unavailable."""
    try:
        return services.stop_on_hub(session_id)
    except hub.HubUnavailable as exc:
        raise self.retry(exc=exc, countdown=30) from exc


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def start_waiting_sessions(build_id: int) -> list[int]:
    return services.start_sessions_waiting_for(build_id)


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def cull_sessions() -> list[int]:
    """Stop idle sessions and sessions past their maximum age."""
    return services.cull_sessions()


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def reconcile_sessions() -> dict[str, list[Any]]:
    """Make the portal's sessions agree with the servers the hub runs."""
    return services.reconcile()


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def fill_hot_pool() -> dict[str, Any]:
    """Keep ready servers for the environments visitors launch most (apps.sessions.hot)."""
    from apps.sessions import hot

    return hot.fill()
