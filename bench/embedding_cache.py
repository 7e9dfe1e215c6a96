"""The embedding cache: a second run that needs the same embeddings does no forward pass.

Issue 3's figure: the second identical run at least 20x faster than the first. Both runs go
through the same services the Celery tasks call (extract, then score), in this process, on
the embedded SQLite default in a temporary folder; the first extracts, the second finds the
EmbeddingSet by fingerprint.

    .venv/bin/python bench/embedding_cache.py [--model resnet18] [--images 1797]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=1797)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="likeness-bench-")
    os.environ.update({"LIKENESS_VAR_DIR": tmp, "DEBUG": "1", "HF_HUB_OFFLINE": "1"})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT", "EMBEDDINGS_ROOT"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    import django

    django.setup()
    from django.core.management import call_command

    from evaluation import services
    from evaluation.imports.stimuli import dataset_import_images
    from evaluation.metrics import knn_entry
    from evaluation.models import Score
    from evaluation.services import queue
    from webapp.demo import digits_zip

    call_command("migrate", verbosity=0)
    queue._enqueue = lambda *args: None  # steps are driven here, not by a worker
    dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=args.images)))
    model = services.model_register(
        name=args.model, source="timm", identifier=args.model, weights="untrained"
    )

    def one_run() -> float:
        run = services.run_create(
            dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")]
        )
        step = run.steps.get()
        started = time.perf_counter()
        services.step_extract(step_id=step.pk, worker="bench")
        services.step_score(step_id=step.pk, worker="bench")
        seconds = time.perf_counter() - started
        step.refresh_from_db()
        assert step.status == "succeeded", step.error_message
        return seconds

    first, second = one_run(), one_run()
    values = sorted({round(s.value, 12) for s in Score.objects.all()})
    print(f"{args.model} (untrained), {args.images} digits, k-NN(k=5, LOO)")
    print(
        f"first run (extracts) {first:7.2f} s   second run (cache) {second:7.3f} s   "
        f"speed-up {first / second:6.1f}x (target >= 20)   same score: {len(values) == 1}"
    )


if __name__ == "__main__":
    main()
