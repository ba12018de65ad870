"""/health tells everyone whether each check passed, and only staff what a check answered
(a failing check's exception text names hosts, paths and versions)."""

from __future__ import annotations

import pytest

from apps.accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_hub(settings):
    settings.BINDERY_HUB_API_URL = "http://127.0.0.1:1/hub/api"  # nothing listens on port 1


def test_visitors_and_members_get_the_status_words_only(client):
    for user in (None, UserFactory()):
        if user is not None:
            client.force_login(user)
        response = client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "fail"
        assert body["failing"] == ["celery", "hub"]
        assert body["checks"]["database"] == {"ok": True}
        assert body["checks"]["hub"] == {"ok": False}
        assert "127.0.0.1:1" not in response.content.decode()
        assert "heartbeat" not in response.content.decode()


def test_staff_see_each_checks_detail(client):
    client.force_login(UserFactory(is_staff=True))
    response = client.get("/health")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True and checks["database"]["detail"]
    assert "heartbeat" in checks["celery"]["detail"]
    assert checks["hub"]["ok"] is False and checks["hub"]["detail"]
    assert "ms" in checks["redis"]
