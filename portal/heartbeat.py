"""Celery workers announce themselves in Redis so /health can tell a live worker cheaply.

A worker bootstep writes ``<prefix>:worker:<hostname>`` every ``INTERVAL`` seconds with a
TTL of ``TTL`` seconds; a worker that dies stops refreshing and its key expires.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from celery import bootsteps

INTERVAL = 5.0
TTL = 20
log = logging.getLogger(__name__)


def _key(hostname: str) -> str:
    from portal.redis import key

    return key("worker", hostname)


class Heartbeat(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def _beat(self, hostname: str) -> None:
        from portal.redis import get_redis

        try:
            get_redis().set(_key(hostname), str(time.time()), ex=TTL)
        except Exception as exc:  # Redis briefly away: the next round tries again
            log.warning("worker heartbeat failed: %s", exc)

    def start(self, worker: Any) -> None:
        self._beat(worker.hostname)
        self.tref = worker.timer.call_repeatedly(INTERVAL, self._beat, (worker.hostname,))

    def stop(self, worker: Any) -> None:
        from portal.redis import get_redis

        if self.tref is not None:
            self.tref.cancel()
        with contextlib.suppress(Exception):  # shutting down; the key expires anyway
            get_redis().delete(_key(worker.hostname))

    def terminate(self, worker: Any) -> None:
        self.stop(worker)  # a cold shutdown stops the heartbeat too


def live_workers() -> list[str]:
    from portal.redis import get_redis

    prefix = _key("")
    return [k.decode()[len(prefix) :] for k in get_redis().scan_iter(match=prefix + "*", count=100)]
