"""/health is 200 only when the database, Redis, a Celery worker and the hub all answer."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from portal.celery import app as celery_app

pytestmark = [pytest.mark.hub, pytest.mark.django_db(transaction=True)]


def test_health_is_200_with_everything_up(admin_client, hub_settings):
    # Staff, who see each check's detail.
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        response = admin_client.get("/health")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert body["checks"]["hub"]["detail"].startswith("jupyterhub ")
