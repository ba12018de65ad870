"""The Celery app: Redis broker, JSON only, late acks, time limits from settings."""

from __future__ import annotations

import os

from celery import Celery

from portal.beat_thread import OPTION, BeatThread
from portal.heartbeat import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add(Heartbeat)
app.steps["worker"].add(BeatThread)
app.user_options["worker"].add(OPTION)
