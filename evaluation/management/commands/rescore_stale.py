"""List a target's stale scores and re-score them in one run, as the leaderboard's button
does: cached embeddings are reused, so models whose weights did not change need no forward
pass."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, table
from evaluation import services
from evaluation.management.lookups import EvaluationCommand
from evaluation.models import PretrainedModel, Target


class Command(EvaluationCommand):
    help = (
        "A score is stale when the metric's code version, the dataset's stimuli or the model's\n"
        "source, weights, revision or pooling changed since it was computed. This lists a\n"
        "target's stale scores with the reasons and, unless --list, queues one run that\n"
        "re-computes them (workers must be running; follow it with `evaluate --wait`-style\n"
        "polling on the run page or /api/runs/<id>/)."
    )
    examples = """
  manage.py rescore_stale --target 4 --list
  manage.py rescore_stale --target 4
  manage.py rescore_stale --target 4 --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("--target", required=True, type=int, help="A target id.")
        parser.add_argument(
            "--list", action="store_true", help="Only list the stale scores; queue nothing."
        )

    def run(self, **options: Any) -> Outcome:
        target = Target.objects.filter(pk=options["target"]).select_related("dataset").first()
        if target is None:
            raise CommandError(f"No target with id {options['target']}.")
        stale = services.stale_scores(target=target)
        names = dict(
            PretrainedModel.objects.filter(pk__in={s.model_id for s in stale}).values_list(
                "pk", "name"
            )
        )
        lines = [f"{len(stale)} stale score(s) on {target.name}"]
        lines += table(
            ["score", "model", "layer", "metric", "why"],
            [
                (s.score_id, names[s.model_id], s.layer, s.metric, "; ".join(s.reasons))
                for s in stale
            ],
        )
        document: dict[str, Any] = {
            "target": target.pk,
            "stale": [
                {
                    "score": s.score_id,
                    "model": names[s.model_id],
                    "layer": s.layer,
                    "metric": s.metric,
                    "params": s.params,
                    "reasons": list(s.reasons),
                }
                for s in stale
            ],
            "run": None,
        }
        if stale and not options["list"]:
            rescoring = services.scores_rescore_stale(target=target)
            document["run"] = rescoring.run.pk
            document["left"] = [s.score_id for s in rescoring.left]
            lines.append(
                f"Queued run {rescoring.run.pk} over {rescoring.run.steps.count()} model(s)."
            )
            if rescoring.left:
                lines.append(
                    f"Left {len(rescoring.left)} stale score(s) whose embeddings are at another "
                    "precision: re-score them from a worker extracting at that precision."
                )
        return Outcome(document, lines)
