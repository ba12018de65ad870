"""/health against the real database, the real Redis and a real Celery worker. (With a real
hub too: apps/sessions/tests/test_health_hub.py.)"""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from portal.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_hub(settings):
    settings.BINDERY_HUB_API_URL = "http://127.0.0.1:1/hub/api"  # nothing listens on port 1


def test_health_names_every_failing_check(client):
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["celery", "hub"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True


def test_a_live_worker_passes_the_celery_check(admin_client):
    # Staff: they see each check's detail (portal/tests/test_health_details.py).
    with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        response = admin_client.get("/health")
    assert response.json()["failing"] == ["hub"], response.json()
    assert response.json()["checks"]["celery"]["detail"] == "1 worker(s)"
    # The worker removes its heartbeat when it stops.
    assert admin_client.get("/health").json()["failing"] == ["celery", "hub"]


def test_health_reports_redis_down(client, settings):
    from portal.redis import get_redis

    get_redis.cache_clear()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/health")
    finally:
        get_redis.cache_clear()
    assert response.status_code == 503
    assert "redis" in response.json()["failing"]
