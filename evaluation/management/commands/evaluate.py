"""Create an evaluation run (models x layers x metrics on a dataset's targets) through the
same service as the run form, queue it, and optionally follow it to its scores.

``--wait`` follows the run in the database (progress and time left on stderr) while Celery
workers do the work; ``--in-process`` does the work in this process, for a machine with no
worker running. Both end with the scores, or with each failed model's message.
"""

from __future__ import annotations

import argparse
import os
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import connections
from django.db.models import Prefetch
from django.urls import reverse

from core.cli import (
    Outcome,
    ProgressLine,
    add_user_option,
    bar,
    duration,
    table,
    user_lookup,
    wrapped_stream,
)
from evaluation import selectors, services
from evaluation.engine.errors import MetricError
from evaluation.management.lookups import (
    EvaluationCommand,
    dataset_lookup,
    model_lookup,
    models_lookup,
)
from evaluation.metrics import METRICS, main_metrics, parse_metric
from evaluation.models import (
    Dataset,
    PretrainedModel,
    Run,
    RunStatus,
    RunStep,
    Score,
    StepStatus,
    Target,
)

TIMEOUT_EXIT_STATUS = 124  # as timeout(1): the wait ran out, the run did not fail
# Some models failed, the others' scores are stored: not a success, but not nothing either.
PARTLY_FAILED_EXIT_STATUS = 3
NO_WORKER_HINT_SECONDS = 15.0
QUEUE_UNREACHABLE_NOTE = (
    "The task queue (Celery broker) is unreachable: the run is stored and queued, and the "
    "workers send its tasks once the broker answers again (check CELERY_BROKER_URL, or start "
    "Redis). Do not create it again; --in-process needs no queue."
)


def _metrics_help() -> str:
    rows = [
        textwrap.fill(
            info.description, width=98, initial_indent=f"  {name:26} ", subsequent_indent=" " * 29
        )
        for name, info in METRICS.items()
    ]
    parameters = [
        f"{name}({','.join(_parameter_help(p) for p in info.parameters)})"
        for name, info in METRICS.items()
        if info.parameters
    ]
    return (
        "metrics (--metric NAME or NAME(param=value,...)):\n"
        + "\n".join(rows)
        + "\n"
        + textwrap.fill(
            ", ".join(parameters),
            width=98,
            initial_indent="  parameters: ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
    )


def _parameter_help(parameter: Any) -> str:
    choices = "|".join(str(value) for value, _ in parameter.choices)
    return f"{parameter.name}={choices or parameter.default}"


class Command(EvaluationCommand):
    help = (
        "Evaluate models on a dataset: one run, one step per model (extract embeddings, then\n"
        "score every metric against each of the dataset's targets: its labels and its human\n"
        "judgments). Without --wait it queues the run for the Celery workers and prints its id.\n"
        "--wait follows it (progress on stderr) and prints the scores; --in-process does the\n"
        "work here, with no worker. Cached embeddings are reused. A run whose models all fail\n"
        "prints each failure and exits 1; one where only some failed prints the scores of the\n"
        "others and each failure, and exits 3; --timeout stops waiting (exit 124)."
    )
    examples = (
        """
  manage.py evaluate --dataset digits --model resnet18-untrained --wait
  manage.py evaluate --dataset stsb --model minilm tf-idf --metric knn 'knn(k=10,split=holdout)'
  manage.py evaluate --dataset digits --model 'resnet*' --metric linear_probe --wait --json
  manage.py evaluate --dataset digits --model resnet18-untrained \\
      --layers resnet18-untrained=layer1,layer2,layer3,layer4 --in-process
  manage.py evaluate --dataset simlex-words --model minilm --metric 'pair_alignment(correlation=pearson)'
  manage.py evaluate --run 12 --timeout 600        # follow a run queued earlier

"""
        + _metrics_help()
        + "\n\nWithout --metric: k-NN for labels, pair_alignment for pair ratings, odd_one_out "
        "for triplets, two_afc for 2AFC (each target the run scores). Without --target: every "
        "target of the dataset but a study pilot's simulated ones."
    )

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", metavar="DATASET", help="Dataset id or name.")
        parser.add_argument(
            "--model",
            "--models",
            dest="models",
            nargs="+",
            action="extend",
            default=[],
            metavar="MODEL",
            help="Model ids, names or identifiers; a pattern with * matches names "
            "(of the dataset's modality).",
        )
        parser.add_argument(
            "--all-models",
            action="store_true",
            help="Every registered model of the dataset's modality.",
        )
        parser.add_argument(
            "--layers",
            action="append",
            default=[],
            metavar="MODEL=LAYER[,LAYER...]",
            help="Layers to score for a model (default: its default layer); 'all' for every "
            "listed layer (see list_layers). Repeatable.",
        )
        parser.add_argument(
            "--metric",
            "--metrics",
            dest="metrics",
            nargs="+",
            action="extend",
            default=[],
            metavar="METRIC",
            help="Metrics to compute, e.g. knn 'knn(k=10,split=holdout)' linear_probe "
            "(default: each target's main metric).",
        )
        parser.add_argument(
            "--target",
            dest="targets",
            action="append",
            type=int,
            default=[],
            metavar="TARGET_ID",
            help="Score only this target of the dataset (its id; repeatable). Without it: "
            "every target but a study pilot's simulated ones, which are scored only when named.",
        )
        parser.add_argument(
            "--run",
            type=int,
            metavar="RUN_ID",
            help="Follow an existing run instead of creating one (implies --wait).",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Wait for the run to end, with progress on stderr, then print the scores.",
        )
        parser.add_argument(
            "--in-process",
            action="store_true",
            help="Extract and score in this process (no worker needed; implies --wait).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="Stop waiting after this long (exit 124). The run goes on on the workers; "
            "with --in-process it is cancelled.",
        )
        parser.add_argument(
            "--poll", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS
        )
        add_user_option(parser)

    def run(self, **options: Any) -> Outcome:
        if options["timeout"] is not None and options["timeout"] <= 0:
            raise CommandError("--timeout must be a positive number of seconds.")
        self.poll = max(0.05, options["poll"])
        self.progress = ProgressLine(wrapped_stream(self.stderr), enabled=self.verbosity > 0)
        if options["run"] is not None:
            if (
                options["dataset"]
                or options["models"]
                or options["all_models"]
                or options["metrics"]
                or options["targets"]
            ):
                raise CommandError(
                    "--run follows an existing run; drop --dataset, --model, --metric and --target."
                )
            if options["in_process"]:
                raise CommandError("--in-process runs a new run; a queued run is a worker's.")
            run = Run.objects.filter(pk=options["run"]).first()
            if run is None:
                raise CommandError(f"No run with id {options['run']}.")
            return self._follow(run, timeout=options["timeout"])
        run = self._create(options)
        if options["in_process"]:
            return self._run_here(run, timeout=options["timeout"])
        if options["wait"]:
            return self._follow(run, timeout=options["timeout"])
        return self._queued(run)

    # --- Creating -----------------------------------------------------------------------
    def _create(self, options: dict[str, Any]) -> Run:
        if not options["dataset"]:
            raise CommandError("Choose a dataset (--dataset), or follow a run with --run.")
        dataset = dataset_lookup(options["dataset"])
        if options["all_models"]:
            if options["models"]:
                raise CommandError("--all-models and --model contradict each other.")
            models = list(PretrainedModel.objects.filter(modality=dataset.modality))
            if not models:
                raise CommandError(f"No {dataset.modality} model is registered.")
        elif options["models"]:
            models = models_lookup(options["models"], modality=dataset.modality)
        else:
            raise CommandError("Choose models (--model NAME ..., or --all-models).")
        layers = parse_layers(options["layers"], models)
        targets = parse_targets(options["targets"], dataset)
        metrics = parse_metrics(options["metrics"], dataset, targets)
        user = user_lookup(options["user"])
        # No broker check here: a run is stored even while the broker is down (its tasks are
        # sent once it answers), as the form and the API store it; --in-process needs none.
        run = services.run_create(
            dataset=dataset,
            models=models,
            metrics=metrics,
            layers=layers,
            created_by=user,
            targets=targets,
        )
        self.note(
            f"Run {run.pk}: {len(models)} model(s) on {dataset.name} "
            f"({dataset.stimulus_count} stimuli), {', '.join(run.metric_keys)}."
        )
        return run

    def _queued(self, run: Run) -> Outcome:
        run = _load(run.pk)
        document = run_document(run)
        lines = [
            f"Run {run.pk} queued: {len(document['steps'])} model(s) on {run.dataset.name}, "
            f"{', '.join(run.metric_keys)}.",
            f"Follow it with `manage.py evaluate --run {run.pk}` or at {document['run']['path']}.",
        ]
        if run.waiting_for_queue:
            lines.append(QUEUE_UNREACHABLE_NOTE)
        return Outcome(document=document, lines=lines)

    # --- Following ----------------------------------------------------------------------
    def _follow(self, run: Run, *, timeout: float | None) -> Outcome:
        started = time.monotonic()
        hinted = False
        try:
            while True:
                current = _load(run.pk)
                self._draw(current)
                if current.is_finished:
                    break
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    self.progress.close()
                    raise CommandError(
                        f"Run {run.pk} has not finished after {duration(timeout)} "
                        f"({current.status}, {selectors.run_progress_fraction(current):.0%}); it "
                        f"goes on: follow it with `manage.py evaluate --run {run.pk}`.",
                        returncode=TIMEOUT_EXIT_STATUS,
                    )
                if not hinted and waited >= NO_WORKER_HINT_SECONDS and _untouched(current):
                    hinted = True
                    self.progress.close()
                    if current.waiting_for_queue:
                        self.note(QUEUE_UNREACHABLE_NOTE)
                    else:
                        self.note(
                            f"No worker has picked up run {run.pk} after {duration(waited)}: "
                            "start one (`make run`, `manage.py serve`, or `celery -A workers "
                            "worker -Q gpu,cpu`), or run the evaluation with --in-process."
                        )
                time.sleep(self.poll)
        except KeyboardInterrupt:
            self.progress.close()
            raise CommandError(
                f"Stopped waiting; run {run.pk} goes on (follow it with "
                f"`manage.py evaluate --run {run.pk}`)."
            ) from None
        self.progress.close()
        return finished_outcome(current)

    def _run_here(self, run: Run, *, timeout: float | None) -> Outcome:
        """Do each step's work here, through the services a worker calls. The messages the
        run queued find their steps done and do nothing, should a worker start later."""
        worker = f"cli@{socket.gethostname()}:{os.getpid()}"
        started = time.monotonic()
        watcher = _Watcher(run.pk, self._draw, self.poll, timeout)
        watcher.start()
        try:
            for step_id in run.steps.order_by("pk").values_list("pk", flat=True):
                services.step_extract(step_id=step_id, worker=worker)
                services.step_score(step_id=step_id, worker=worker)
        except KeyboardInterrupt:
            services.run_cancel(run=run)
            raise CommandError(f"Interrupted: run {run.pk} is cancelled.") from None
        finally:
            watcher.stop()
            self.progress.close()
        if watcher.timed_out:
            raise CommandError(
                f"Run {run.pk} did not finish within {duration(timeout)}; it is cancelled.",
                returncode=TIMEOUT_EXIT_STATUS,
            )
        current = _load(run.pk)
        if not current.is_finished:
            # A worker claimed a step first (the run's messages were queued too): wait for it.
            left = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
            return self._follow(current, timeout=left)
        self._draw(current)
        self.progress.close()
        return finished_outcome(current)

    def _draw(self, run: Run) -> None:
        progress = selectors.run_progress_fraction(run)
        left = selectors.run_seconds_left(run, progress)
        parts = [f"run {run.pk} {bar(progress)} {progress:4.0%}"]
        if not run.is_finished:
            parts.append(f"ETA {duration(left)}" if left is not None else "ETA ?")
        for step in run.steps.all():
            state = step.get_status_display().lower()
            if step.status == StepStatus.EXTRACTING and step.total:
                state += f" {step.processed}/{step.total}"
            parts.append(f"{step.model.name}: {state}")
        self.progress.show(" | ".join(parts), force=run.is_finished)


class _Watcher(threading.Thread):
    """Draws progress from the database while this process works, and cancels the run
    when --timeout passes (the work then stops at its next progress report)."""

    def __init__(
        self, run_id: int, draw: Callable[[Run], None], poll: float, timeout: float | None
    ) -> None:
        super().__init__(daemon=True)
        self.run_id, self.draw, self.poll, self.timeout = run_id, draw, poll, timeout
        self.halt = threading.Event()
        self.timed_out = False

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self.halt.wait(self.poll):
                try:
                    run = _load(self.run_id)
                except Run.DoesNotExist:
                    continue  # not visible to this connection (yet)
                self.draw(run)
                if self.timeout is not None and time.monotonic() - started >= self.timeout:
                    self.timed_out = services.run_cancel(run=run)
                    return
        finally:
            connections.close_all()  # this thread's connections only

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def _load(run_id: int) -> Run:
    return (
        Run.objects.select_related("dataset")
        .prefetch_related(
            Prefetch("steps", queryset=RunStep.objects.select_related("model").order_by("pk"))
        )
        .get(pk=run_id)
    )


def _untouched(run: Run) -> bool:
    return run.status == RunStatus.QUEUED and all(
        step.status == StepStatus.QUEUED and not step.attempts for step in run.steps.all()
    )


# --- Parsing options -----------------------------------------------------------------------------
def parse_targets(ids: list[int], dataset: Dataset) -> list[Target] | None:
    """The targets named with --target (of ``dataset``, each once); None where none was
    named (the run then scores the dataset's default ones)."""
    if not ids:
        return None
    try:
        return selectors.targets_named(dataset=dataset, ids=ids)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None


def parse_metrics(
    specs: list[str], dataset: Dataset, targets: list[Target] | None = None
) -> list[dict[str, Any]]:
    """Metric entries as the run form builds them; by default the main metric of each target
    the run scores (``targets``, else the dataset's default ones)."""
    if not specs:
        scored = (
            targets
            if targets is not None
            else list(selectors.targets_scored_by_default(dataset=dataset))
        )
        kinds = {t.kind for t in scored}
        if not kinds and targets is None and dataset.targets.exists():
            raise CommandError(
                f"{dataset.name} has no labels and no people's judgments to score against, "
                "only a study pilot's simulated ones: name one with --target to score it."
            )
        if not kinds:
            raise CommandError(
                f"{dataset.name} has no labels and no human judgments to score against; "
                "import judgments first (import_judgments)."
            )
        specs = main_metrics(kinds)
    entries: dict[str, dict[str, Any]] = {}
    for spec in specs:
        entry = metric_entry(spec)
        entries.setdefault(f"{entry['name']}{sorted(entry['params'].items())}", entry)
    return list(entries.values())


def metric_entry(spec: str) -> dict[str, Any]:
    """A --metric value as a run entry (the registry's parser; its message, as the CLI's)."""
    try:
        return parse_metric(spec)
    except MetricError as exc:
        raise CommandError(str(exc)) from None


def parse_layers(specs: list[str], models: list[PretrainedModel]) -> dict[int, list[str]]:
    chosen = {model.pk: model for model in models}
    layers: dict[int, list[str]] = {}
    for spec in specs:
        reference, equals, names = spec.partition("=")
        if not equals or not names.strip():
            raise CommandError(f"--layers {spec!r}: write MODEL=LAYER[,LAYER...].")
        model = model_lookup(reference)
        if model.pk not in chosen:
            raise CommandError(
                f"--layers names {model.name}, which is not one of the run's models."
            )
        picked = [n.strip() for n in names.split(",") if n.strip()]
        if picked == ["all"]:
            if not model.layers:
                raise CommandError(
                    f"The layers of {model.name} are not listed yet; list them with "
                    f"`manage.py list_layers {model.pk} --inspect` first."
                )
            picked = model.layer_names
        layers.setdefault(model.pk, []).extend(picked)
    return layers


# --- Results -------------------------------------------------------------------------------------
def run_document(run: Run) -> dict[str, Any]:
    progress = selectors.run_progress_fraction(run)
    return {
        "run": {
            "id": run.pk,
            "status": run.status,
            "status_summary": run.status_summary,
            "waiting_for_queue": run.waiting_for_queue,
            "dataset": {"id": run.dataset_id, "name": run.dataset.name},
            "metrics": run.metric_keys,
            "targets": [{"id": t.pk, "name": t.name, "kind": t.kind} for t in run.targets.all()],
            "progress": round(progress, 4),
            "seconds_left": selectors.run_seconds_left(run, progress),
            "elapsed_seconds": run.elapsed_seconds,
            "error": run.error_message,
            "path": reverse("evaluation:run_detail", args=[run.pk]),
        },
        "steps": [
            {
                "model": step.model.name,
                "model_id": step.model_id,
                "status": step.status,
                "layers": step.layers or [step.model.default_layer],
                "processed": step.processed,
                "total": step.total,
                "reused_embeddings": step.reused_embeddings,
                "extract_seconds": step.extract_seconds,
                "score_seconds": step.score_seconds,
                "error": step.error_message,
            }
            for step in run.steps.all()
        ],
    }


def finished_outcome(run: Run) -> Outcome:
    scores = list(
        Score.objects.filter(run=run)
        .select_related("model", "target")
        .defer("resamples")
        .order_by("target__name", "metric_key", "-value", "model__name", "layer")
    )
    document = run_document(run)
    document["scores"] = [
        {
            "model": s.model.name,
            "model_id": s.model_id,
            "layer": s.layer,
            "target": s.target.name,
            "target_id": s.target_id,
            "metric": s.metric_key,
            "value": s.value,
            "ci_low": s.ci_low,
            "ci_high": s.ci_high,
            "ceiling": s.ceiling,
            "normalized": s.normalized,
            "n": s.n,
        }
        for s in scores
    ]
    rows = [
        (
            s.model.display_name,
            s.layer,
            s.target.name,
            s.metric_key,
            f"{s.value:.4f}",
            f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
            f"{s.ceiling:.3f}" if s.ceiling is not None else "-",
            f"{s.normalized:.1%}" if s.normalized is not None else "-",
            s.n,
        )
        for s in scores
    ]
    elapsed = duration(run.elapsed_seconds) if run.elapsed_seconds is not None else "?"
    summary = run.status_summary[:1].lower() + run.status_summary[1:]
    lines = [f"Run {run.pk} {summary} in {elapsed} on {run.dataset.name}."]
    if rows:
        lines += table(
            ("model", "layer", "target", "metric", "value", "95% CI", "ceiling", "/ceiling", "n"),
            rows,
        )
    failed = [step for step in run.steps.all() if step.status == StepStatus.FAILED]
    for step in failed:
        lines.append(f"FAILED {step.model.display_name}: {step.error_message}")
    outcome = Outcome(document=document, lines=lines)
    reasons = "; ".join(f"{s.model.name}: {s.error_message.rstrip('.')}" for s in failed)
    if run.status == RunStatus.FAILED:
        outcome.error = f"Run {run.pk} failed. {reasons or run.error_message.rstrip('.')}."
    elif run.status == RunStatus.PARTLY_FAILED:
        outcome.error = f"Run {run.pk} {summary}. {reasons or run.error_message.rstrip('.')}."
        outcome.returncode = PARTLY_FAILED_EXIT_STATUS
    elif run.status == RunStatus.CANCELLED:
        outcome.error = f"Run {run.pk} was cancelled."
    return outcome
