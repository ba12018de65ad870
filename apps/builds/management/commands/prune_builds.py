from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat

from apps.builds.backends import disk
from apps.builds.selectors import environment_keys_in_use


class Command(BaseCommand):
    help = (
        "Report the disk used by environments and checkouts, and remove the least recently "
        "used ones down to a size budget. Never removes an environment a session uses."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--budget", default=None,
            help="Size to prune down to, e.g. 20G (default: BINDERY_BUILD_DISK_BUDGET).",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="Only say what would go.")
        parser.add_argument("--report", action="store_true", help="Only print the size report.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = disk.disk_usage()
        for entry in report.entries:
            used = entry.last_used.strftime("%Y-%m-%d %H:%M") if entry.last_used else "never"
            self.stdout.write(
                f"{entry.kind:12} {filesizeformat(entry.bytes):>10}  last used {used:16}  "
                f"{entry.name or entry.key[:16]}"
            )
        self.stdout.write(f"total {filesizeformat(report.total_bytes)}")
        if options["report"]:
            return
        try:
            budget = disk.parse_size(options["budget"] or settings.BINDERY_BUILD_DISK_BUDGET)
        except ValueError as exc:
            raise CommandError(f"Not a size: {exc}") from None
        result = disk.prune(budget, environment_keys_in_use(), dry_run=options["dry_run"])
        verb = "would remove" if result.dry_run else "removed"
        for entry in result.removed:
            self.stdout.write(f"{verb} {entry.kind} {entry.name or entry.key[:16]} "
                              f"({filesizeformat(entry.bytes)})")  # fmt: skip
        for path in result.busy:
            self.stdout.write(f"skipped {path}: a build is using it")
        self.stdout.write(
            f"{filesizeformat(result.before_bytes)} → {filesizeformat(result.after_bytes)} "
            f"(budget {filesizeformat(budget)}; {len(result.kept_in_use)} in use kept)"
        )
