"""Keep this machine's copies of files from the object store (STORAGE_CACHE_DIR) within a size,
or drop the ones unused for a while: least recently used first. Only copies go; the next
reader fetches a file again."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome
from core.uploads import human_bytes
from evaluation import storage
from evaluation.management.lookups import EvaluationCommand

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def size_in_bytes(text: str) -> int:
    """'50G', '500 MB', '1.5t' or a number of bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise CommandError(f"{text!r} is not a size: give bytes or a number with k, M, G or T.")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Command(EvaluationCommand):
    help = (
        "Remove this machine's copies of stored files (STORAGE_CACHE_DIR: media and embeddings\n"
        "fetched from the object store), least recently used first, until they take at most\n"
        "--max-size, and every copy unused for --unused-days. Files being written are left\n"
        "alone. Safe while workers run: a copy is fetched again when needed. Run it from cron."
    )
    examples = """
  manage.py prune_storage_cache --max-size 50G
  manage.py prune_storage_cache --unused-days 30 --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("--max-size", type=size_in_bytes, help="e.g. 50G")
        parser.add_argument("--unused-days", type=float, help="e.g. 30")

    def run(self, **options: Any) -> Outcome:
        if options["max_size"] is None and options["unused_days"] is None:
            raise CommandError("Give --max-size, --unused-days or both.")
        if not (storage.is_remote(storage.MEDIA) or storage.is_remote(storage.EMBEDDINGS)):
            return Outcome(
                {"files": 0, "freed_bytes": 0, "kept_bytes": 0},
                ["No object store is configured (STORAGE_BUCKET): there is no cache to prune."],
                returncode=0,
            )
        unused_for = options["unused_days"] * 86400 if options["unused_days"] is not None else None
        pruned = storage.prune_cache(max_bytes=options["max_size"], unused_for=unused_for)
        return Outcome(
            {"files": pruned.files, "freed_bytes": pruned.freed, "kept_bytes": pruned.kept},
            [
                f"Removed {pruned.files} cached cop{'y' if pruned.files == 1 else 'ies'} "
                f"({human_bytes(pruned.freed)}); {human_bytes(pruned.kept)} kept in "
                f"{settings.STORAGE_CACHE_DIR}."
            ],
            returncode=0,
        )
