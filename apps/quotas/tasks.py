"""Beat's quota work: the usage ledger each minute, volumes measured on a schedule."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from apps.quotas import ledger, services

log = logging.getLogger(__name__)


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def account_usage() -> dict[str, Any]:
    """Write the minute's ledger rows (catching up any minutes missed), then warn or stop
    sessions whose month runs out."""
    report: dict[str, Any] = ledger.account_all()
    report.update(services.enforce_session_hours())
    return report


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def measure_storage() -> int:
    """Measure the volumes running sessions mount, and record them in the ledger."""
    return ledger.measure_volumes_in_use()
