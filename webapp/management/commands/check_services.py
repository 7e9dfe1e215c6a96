"""Check that the configured database and Celery broker answer; exit 1 with a clear
message if one does not."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.checks import service_problems


class Command(BaseCommand):
    help = "Check that the database (DATABASE_URL) and broker (CELERY_BROKER_URL) are reachable."

    def handle(self, *args: Any, **options: Any) -> None:
        problems = service_problems()
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(self.style.SUCCESS("Database and broker are reachable."))
