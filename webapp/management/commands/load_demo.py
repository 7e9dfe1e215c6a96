"""Load the demo: researcher account, digits and STS-B sentence datasets, two models, runs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webapp.demo import demo_load


class Command(BaseCommand):
    help = "Create the demo researcher, datasets, models and k-NN runs (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        credentials = demo_load(log=self.stdout.write)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo researcher: username {credentials['username']} / password {credentials['password']}"
            )
        )
        self.stdout.write(f"Demo study for participants: {credentials['study_url']}")
