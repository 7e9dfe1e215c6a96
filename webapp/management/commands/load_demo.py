"""Load the demo: researcher account, THINGS odd-one-out target, digits and STS-B datasets,
models, runs (human alignment first) and two open rating studies."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webapp.demo import demo_load


class Command(BaseCommand):
    help = (
        "Create the demo researcher, datasets (THINGS concepts with their odd-one-out "
        "triplets, digits, STS-B sentences), models, runs and rating studies (idempotent)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        credentials = demo_load(log=self.stdout.write)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo researcher: username {credentials['username']} / password {credentials['password']}"
            )
        )
        self.stdout.write(f"Demo study for participants (digit pairs): {credentials['study_url']}")
        self.stdout.write(f"Demo study (sentence pairs): {credentials['sentence_study_url']}")
