"""Exporting a million responses: Likeness's streamed CSV export against the naive export
(load every row, build the whole CSV in memory, then send it), same rows, same run.

Issue 4: "exports that do not time out" — the streamed export sends its first bytes at once
and keeps memory flat, whatever the number of responses. Prints time to first byte, total
time and peak resident-memory growth of both (each in a forked child), as ratios.

    .venv/bin/python bench/study_export.py [--responses 1000000]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); it creates and drops the database
likeness_bench_export.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

DB = "likeness_bench_export"
ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    os.environ.update(
        SECRET_KEY="bench",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
        STATIC_MANIFEST="0",
        CELERY_BROKER_URL="memory://",
    )
    sys.path.insert(0, str(ROOT))
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB], check=True)
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def fill(responses: int) -> object:
    """A pair study with ``responses`` answered trials, written in bulk."""
    from django.utils import timezone

    from annotation import services
    from annotation.models import Participant, Response, Trial
    from evaluation.imports.stimuli import dataset_import_texts

    words = "".join(f"word {i},w\n" for i in range(500))
    dataset = dataset_import_texts(
        name="words", upload=io.BytesIO(("text,label\n" + words).encode())
    )
    study = services.study_create(
        dataset=dataset,
        name="export bench",
        kind="pairs",
        items=services.ItemPlan(mode="random", count=20_000),
        judgments_per_item=50,
        trials_per_session=100,
    )
    items = list(study.items.values_list("pk", "a_id", "b_id"))
    now = timezone.now()
    per_participant = 100
    for start in range(0, responses, 50_000):
        count = min(50_000, responses - start)
        participants = Participant.objects.bulk_create(
            [Participant(study=study, plan=[]) for _ in range(count // per_participant)]
        )
        trials = Trial.objects.bulk_create(
            [
                Trial(
                    participant=participants[i // per_participant],
                    position=i % per_participant,
                    role="regular",
                    item_id=items[(start + i) % len(items)][0],
                    shown=list(items[(start + i) % len(items)][1:]),
                    status="answered",
                    issued_at=now,
                    expires_at=now,
                )
                for i in range(count)
            ],
            batch_size=10_000,
        )
        Response.objects.bulk_create(
            [
                Response(trial=t, value=1 + (i % 7), rt_ms=900, idempotency_key=f"k{start + i}")
                for i, t in enumerate(trials)
            ],
            batch_size=10_000,
        )
        print(f"  {start + count:,} responses written", flush=True)
    return study


def measured(export, study: object) -> tuple[float, float, int, int]:
    """Run ``export`` in a forked child: its times, and how far its resident memory grew
    above where it started (sampled every 5 ms: tracemalloc would slow the naive export of
    a million rows by hours, and the kernel's high-water mark is inherited from the
    parent)."""
    from django.db import connections

    connections.close_all()  # the child opens its own connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        start_rss = _rss_bytes()
        highest = [start_rss]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                highest[0] = max(highest[0], _rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        first, total, _, size = export(study)
        done.set()
        sampler.join()
        grew = max(highest[0], _rss_bytes()) - start_rss
        os.write(write, json.dumps([first, total, grew, size]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    if not payload:
        raise RuntimeError(f"the {export.__name__} export failed in its child process")
    first, total, peak, size = json.loads(payload)
    return first, total, peak, size


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def streamed(study: object) -> tuple[float, float, int, int]:
    from annotation import exports

    started = time.perf_counter()
    first = None
    size = 0
    for chunk in exports.as_csv(exports.response_rows(study), exports.RESPONSE_FIELDS):
        if first is None:
            first = time.perf_counter() - started
        size += len(chunk)
    total = time.perf_counter() - started
    return first or total, total, 0, size


def naive(study: object) -> tuple[float, float, int, int]:
    """What a plain view does: every row in memory, the whole file built, then sent."""
    from annotation.models import Response

    started = time.perf_counter()
    rows = list(
        Response.objects.filter(trial__participant__study=study)
        .select_related("trial__participant", "trial__item", "chosen")
        .order_by("pk")
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["response_id", "participant", "position", "item", "shown", "value", "rt_ms"])
    for r in rows:
        writer.writerow(
            [
                r.pk,
                r.trial.participant_id,
                r.trial.position,
                r.trial.item_id,
                r.trial.shown,
                r.value,
                r.rt_ms,
            ]
        )
    body = buffer.getvalue()
    total = time.perf_counter() - started
    return total, total, 0, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=1_000_000)
    args = parser.parse_args()
    setup_django()
    try:
        started = time.perf_counter()
        study = fill(args.responses)
        print(f"filled in {time.perf_counter() - started:.0f} s")
        s_first, s_total, s_peak, s_size = measured(streamed, study)
        n_first, n_total, n_peak, n_size = measured(naive, study)
        mb = 1024 * 1024
        print(f"{args.responses:,} responses")
        print(
            f"streamed: first byte {s_first * 1000:7.1f} ms, all {s_total:6.1f} s, "
            f"peak memory {s_peak / mb:7.1f} MB, {s_size / mb:.0f} MB of CSV"
        )
        print(
            f"naive:    first byte {n_first * 1000:7.1f} ms, all {n_total:6.1f} s, "
            f"peak memory {n_peak / mb:7.1f} MB, {n_size / mb:.0f} MB of CSV"
        )
        print(
            f"first byte {n_first / s_first:,.0f}x sooner; peak memory {n_peak / s_peak:,.0f}x "
            f"lower; total time {n_total / s_total:.2f}x (naive / streamed)"
        )
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB])


if __name__ == "__main__":
    main()
