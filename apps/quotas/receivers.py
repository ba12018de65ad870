from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.builds.signals import build_finished


@receiver(build_finished)
def _account_build(sender: Any, build_id: int, **kwargs: Any) -> None:
    """The build's row in the ledger, when it ends (beat writes any this misses)."""
    from apps.quotas.ledger import account_build

    account_build(build_id)
