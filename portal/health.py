"""GET /health: the database, Redis, a live Celery worker (and more checks apps register)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.heartbeat import live_workers
from portal.redis import get_redis

Check = Callable[[], str]


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.vendor


def _redis() -> str:
    get_redis().ping()
    return "ping ok"


def _celery() -> str:
    workers = live_workers()
    if not workers:
        raise RuntimeError("no Celery worker has sent a heartbeat in the last 20 seconds")
    return f"{len(workers)} worker(s)"


CHECKS: dict[str, Check] = {"database": _database, "redis": _redis, "celery": _celery}


def register_check(name: str, check: Check) -> None:
    CHECKS[name] = check


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Every check's result. Staff see what each answered (a failing one's exception text,
    timings); everyone else — load balancers, visitors — only whether each passed, since
    exception text can name hosts, paths and versions."""
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, "detail": check()}
        except Exception as exc:
            results[name] = {"ok": False, "detail": str(exc) or type(exc).__name__}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    failing = [name for name, result in results.items() if not result["ok"]]
    if not (request.user.is_authenticated and request.user.is_staff):
        results = {name: {"ok": result["ok"]} for name, result in results.items()}
    body = {"status": "fail" if failing else "ok", "failing": failing, "checks": results}
    return JsonResponse(body, status=503 if failing else 200)
