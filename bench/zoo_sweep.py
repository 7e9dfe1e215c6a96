"""Model-zoo sweep: 100 untrained timm architectures over 120 images, through the real path.

Issue 6's figure: "a sweep of 100 untrained timm architectures over 120 images on this machine,
printing models per hour and the share of time spent loading models versus forward passes."

What runs, on a fresh PostgreSQL database (``likeness_bench_sweep``, dropped and created) with
Redis as broker and one real Celery worker (both queues, concurrency 1, as
tests/integration starts it):
1. ``manage.py register_model NAME... --untrained`` registers the architectures in one
   command; the worker then inspects each one (builds it, lists its layers: one forward pass
   on a sample image). Timed until every model is inspected or has failed inspection.
2. One run over all of them (k-NN, leave-one-out, on the digit labels): one step per model,
   extraction then scoring, failures recorded per model while the rest go on. Timed from
   the run's creation until it finishes; models per hour = models finished / wall time.
   From the steps: the time spent building models (``load_seconds``) against the rest of
   extraction (image decoding and forward passes) and scoring.
3. The same run again: every embedding is cached, so no model is built (skip rate).

Baseline, in the same run: the hand-written loop a researcher writes without a tool (the
seed study's scripts): for each architecture, ``timm.create_model(name, pretrained=False,
num_classes=0)``, its own eval transform, a forward pass over the 120 images in batches of 64,
embeddings saved to .npy. Run over the first --baseline-models architectures (to bound the
time) and scaled to models per hour. Printed as a ratio.

The architectures are a fixed, spread selection of timm's small image models (names matching
tiny/small/nano/..., default input at most 224 px): every k-th of the sorted candidates.

    .venv/bin/python bench/zoo_sweep.py [--models 100] [--images 120] [--baseline-models 20]
        [--precision fp32|bf16] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import drop_database, fresh_django, start_watchdog  # bench/_server.py

ROOT = Path(__file__).resolve().parent.parent
PG_BENCH_DB = "likeness_bench_sweep"
BROKER_URL = "redis://127.0.0.1:6379/11"
SMALL = re.compile(
    r"(tiny|small|nano|pico|femto|atto|_b0|resnet18|resnet34|mobilenet|ghostnet|lcnet|"
    r"mixnet_s|regnetx_00|regnety_00|efficientnet_lite0|dla34|levit_128|repvgg_a0)"
)


def architectures(count: int) -> list[str]:
    """``count`` timm image architectures, spread evenly over the sorted small ones."""
    import timm

    candidates = []
    for name in sorted(timm.list_models()):
        if not SMALL.search(name):
            continue
        try:
            size = timm.models.get_pretrained_cfg(name).input_size
        except Exception:
            size = (3, 224, 224)
        if size[0] == 3 and size[-1] <= 224:
            candidates.append(name)
    step = max(1.0, len(candidates) / count)
    return [candidates[int(i * step)] for i in range(min(count, len(candidates)))]


def start_worker(
    env: dict[str, str], log: Path, queues: str = "gpu,cpu", name: str = "sweep@%h"
) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--queues", queues,
               "--concurrency", "1", "--hostname", name, "--loglevel", "warning",
               "--without-gossip", "--without-mingle"]  # fmt: skip
    worker = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return worker


def stop_worker(worker: subprocess.Popen | None) -> None:
    if worker is None or worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


def wait_until(condition, deadline: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"time bound reached while waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - started


def baseline_loop(
    names: list[str], images: list[Path], out: Path, precision: str
) -> tuple[float, int, float]:
    """The hand-written sweep: build, transform, forward, save. (seconds, models, load s)."""
    import numpy as np
    import timm
    import torch
    from PIL import Image

    started, done, loading = time.perf_counter(), 0, 0.0
    for name in names:
        try:
            t0 = time.perf_counter()
            model = timm.create_model(name, pretrained=False, num_classes=0).eval()
            loading += time.perf_counter() - t0
            config = timm.data.resolve_data_config({}, model=model)
            transform = timm.data.create_transform(**config)
            chunks = []
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.inference_mode(), autocast:
                for start in range(0, len(images), 64):
                    batch = torch.stack(
                        [
                            transform(Image.open(p).convert("RGB"))
                            for p in images[start : start + 64]
                        ]
                    )
                    chunks.append(model(batch).float().flatten(1).numpy())
            np.save(out / f"{name}.npy", np.concatenate(chunks))
            done += 1
        except Exception as exc:  # a script like this skips what breaks, as the tool does
            print(f"  baseline: {name} failed: {type(exc).__name__}: {exc}"[:200], flush=True)
    return time.perf_counter() - started, done, loading


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--baseline-models", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="Both sides: the worker's EXTRACTION_PRECISION and autocast in the baseline loop.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-sweep-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}",
        "CELERY_BROKER_URL": BROKER_URL,
        "LIKENESS_VAR_DIR": str(tmp / "var"),
        "MEDIA_ROOT": str(tmp / "media"),
        "EMBEDDINGS_ROOT": str(tmp / "embeddings"),
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
        "EXTRACTION_PRECISION": args.precision,
    }
    env.pop("TEST_DATABASE_NAME", None)
    os.environ.clear()
    os.environ.update(env)
    worker: subprocess.Popen | None = None

    def cleanup() -> None:
        stop_worker(worker)
        if not args.keep:
            drop_database(PG_BENCH_DB)
            shutil.rmtree(tmp, ignore_errors=True)

    watchdog = start_watchdog(args.timeout, cleanup)
    try:
        fresh_django(PG_BENCH_DB, BROKER_URL, ROOT)
        from django.core.management import call_command
        from django.db.models import Sum

        from evaluation import services
        from evaluation.imports.stimuli import dataset_import_images
        from evaluation.metrics import knn_entry
        from evaluation.models import PretrainedModel, Run, RunStep
        from webapp.demo import digits_zip

        names = architectures(args.models)
        dataset = dataset_import_images(
            name="digits", upload=io.BytesIO(digits_zip(limit=args.images))
        )
        cpus = os.cpu_count()
        print(f"{len(names)} untrained timm architectures ({names[0]} ... {names[-1]}), "
              f"{dataset.stimulus_count} images, 1 worker (concurrency 1), {args.precision}, {cpus} CPUs", flush=True)  # fmt: skip

        worker = start_worker(env, tmp / "worker.log")
        # 1. Registration (one command) and the worker's inspections.
        started = time.perf_counter()
        call_command("register_model", *names, "--untrained", "--json", stdout=io.StringIO())
        registered = time.perf_counter() - started
        models = list(PretrainedModel.objects.filter(identifier__in=names))
        ids = [m.pk for m in models]

        def inspected() -> bool:
            pending = PretrainedModel.objects.filter(pk__in=ids, layers=[], inspection_error="")
            return not pending.exists()

        inspect_wall = wait_until(inspected, deadline, "the inspections")
        broken = PretrainedModel.objects.filter(pk__in=ids).exclude(inspection_error="")
        print(f"register: {len(models)} models in one command, {registered:.1f} s; inspection "
              f"(build + one forward pass each) {inspect_wall:.0f} s, "
              f"{len(models) - broken.count()} inspected, {broken.count()} failed", flush=True)  # fmt: skip
        usable = [m for m in models if m.pk not in set(broken.values_list("pk", flat=True))]

        # 2. One run over every usable model.
        started = time.perf_counter()
        run = services.run_create(
            dataset=dataset, models=usable, metrics=[knn_entry(k=5, split="loo")]
        )
        wall = wait_until(lambda: Run.objects.get(pk=run.pk).is_finished, deadline, "the sweep run")
        steps = RunStep.objects.filter(run=run)
        ok = steps.filter(status="succeeded").count()
        failed = list(steps.filter(status="failed").values_list("model__name", "error_message"))
        sums = steps.aggregate(
            load=Sum("load_seconds"), extract=Sum("extract_seconds"), score=Sum("score_seconds")
        )
        load, extract, score = (sums[k] or 0.0 for k in ("load", "extract", "score"))
        forward = extract - load
        busy = extract + score
        rate = ok / wall * 3600
        print(f"sweep: {ok}/{len(usable)} models scored in {wall:.0f} s = {rate:.0f} models/hour "
              f"({len(failed)} failed, each with its reason)", flush=True)  # fmt: skip
        for name, message in failed[:5]:
            print(f"  failed: {name}: {message}"[:200])
        print(f"time in steps: building models {load:.0f} s ({load / busy:.0%}), decoding + "
              f"forward passes {forward:.0f} s ({forward / busy:.0%}), scoring {score:.0f} s "
              f"({score / busy:.0%}); loading : forward = {load / max(forward, 1e-9):.2f} : 1; "
              f"queueing and bookkeeping {max(0.0, wall - busy):.0f} s of the wall time")  # fmt: skip

        # 3. Again: every embedding is cached.
        started = time.perf_counter()
        again = services.run_create(
            dataset=dataset, models=usable, metrics=[knn_entry(k=5, split="loo")]
        )
        cached_wall = wait_until(
            lambda: Run.objects.get(pk=again.pk).is_finished, deadline, "the cached run"
        )
        reused = RunStep.objects.filter(run=again, reused_embeddings=True).count()
        print(f"same sweep again: {reused}/{len(usable)} reused cached embeddings (no model "
              f"built), {cached_wall:.0f} s = {len(usable) / cached_wall * 3600:.0f} models/hour")  # fmt: skip
        stop_worker(worker)

        # Baseline: the hand-written loop over the first architectures.
        media = Path(env["MEDIA_ROOT"])
        images = [
            media / f for f in dataset.stimuli.order_by("order").values_list("file", flat=True)
        ]
        subset = [m.identifier for m in usable[: args.baseline_models]]
        out = tmp / "baseline"
        out.mkdir()
        seconds, done, base_load = baseline_loop(subset, images, out, args.precision)
        base_rate = done / seconds * 3600
        print(f"baseline, hand-written loop (measured in this run, {done} of the same models): "
              f"{seconds:.0f} s = {base_rate:.0f} models/hour; building models "
              f"{base_load / seconds:.0%} of its time")  # fmt: skip
        print(f"Likeness sweep: {rate / base_rate:.2f}x the hand-written loop's models/hour "
              f"(with a queue, per-model records, scoring and failure isolation); "
              f"cached re-run {len(usable) / cached_wall * 3600 / base_rate:.1f}x")  # fmt: skip
        return 0
    finally:
        watchdog.cancel()
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
