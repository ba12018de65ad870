"""Celery beat as a thread of the worker (``celery worker --beat-thread``), on one machine.

Beat only puts tasks on the queue at their times; as a process of its own it holds about
100 MB for that (Django, Celery, the settings). Celery's own ``--beat`` embeds it as a forked
process, which holds as much again. Here it runs as a thread of the worker that runs the
tasks, with the worker's ``--schedule`` file and ``--scheduler``: it starts after the worker
is up and stops before it goes. One worker only: two workers each with a beat thread would
put every periodic task on the queue twice (on Kubernetes, beat stays a singleton
Deployment of its own, deploy/).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from click import Option

log = logging.getLogger(__name__)

OPTION = Option(
    ["--beat-thread"],
    is_flag=True,
    default=False,
    help="Run Celery beat as a thread of this worker (one worker only).",
)


class BeatThread(bootsteps.StartStopStep):
    """Starts beat's ``Service`` in a daemon thread; stops it (waiting) at shutdown."""

    label = "Beat thread"
    conditional = True
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = bool(beat_thread)
        self.service: Any = None
        super().__init__(worker, **kwargs)

    def create(self, worker: Any) -> Any:
        from celery.beat import EmbeddedService  # the worker's only: web never loads beat

        self.service = EmbeddedService(
            worker.app,
            thread=True,
            schedule_filename=worker.schedule_filename,
            scheduler_cls=worker.scheduler,
        )
        return self

    def start(self, worker: Any) -> None:
        log.info("beat: running as a thread of this worker")
        self.service.start()

    def stop(self, worker: Any) -> None:
        if self.service is not None and self.service.is_alive():
            self.service.stop()

    def terminate(self, worker: Any) -> None:
        self.stop(worker)
