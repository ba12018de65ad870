"""``manage.py rotate_encryption_key``: re-encrypt every stored credential with the first
key of BINDERY_ENCRYPTION_KEYS.

To rotate: put a new key first (``BINDERY_ENCRYPTION_KEY=new,old``), restart, run this, then
remove the old key. Safe to run twice.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.repos.services import rotate_encryption_keys


class Command(BaseCommand):
    help = "Re-encrypt every stored repository credential with the first encryption key."

    def handle(self, *args: Any, **options: Any) -> None:
        rotated, unreadable = rotate_encryption_keys()
        self.stdout.write(f"Re-encrypted {rotated} credential(s) with the first key.")
        if unreadable:
            ids = ", ".join(str(i) for i in unreadable)
            raise CommandError(
                f"{len(unreadable)} credential(s) could not be decrypted with any configured "
                f"key and were left as they are: ids {ids}."
            )
