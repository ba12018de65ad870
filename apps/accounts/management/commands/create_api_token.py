from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.services import create_api_token
from portal.errors import BinderyError


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        days = options["expires_days"]
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            issued = create_api_token(user, options["name"], expires_at)
        except BinderyError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"Token {issued.token.name!r} for {user.username}; it is shown once:")
        self.stdout.write(issued.secret)
