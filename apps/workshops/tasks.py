"""Celery entry points for workshops: thin, safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.workshops import services


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def tend_workshops() -> dict[str, Any]:
    """Close what is due, end sessions past their length, forget guests after the retention,
    fill warm pools."""
    return services.tend()
