"""Judgment-efficiency curves of a language-based model on a pair-rating target: its score
with k descriptions per stimulus next to the reliability of m direct ratings per pair, both
against the human judgments consumed."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, table
from evaluation.efficiency import efficiency_curves
from evaluation.management.lookups import EvaluationCommand, model_lookup
from evaluation.models import Target


class Command(EvaluationCommand):
    help = (
        "How good a language-based model gets with 1, 2, ... descriptions (tags, captions) per\n"
        "stimulus, and how reliable direct pair ratings get with 2, 3, ... ratings per pair,\n"
        "each against the number of human judgments it consumed: the cheapest route to a\n"
        "target accuracy. Scores are Spearman correlations with the mean ratings (the\n"
        "ratings' curve: split-half reliability with Spearman-Brown), mean and 95% range over\n"
        "random draws."
    )
    examples = """
  manage.py efficiency_curves --target 4 --model "tags by minilm"
  manage.py efficiency_curves --target 4 --model 17 --draws 50 --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("--target", required=True, type=int, help="A pair-rating target id.")
        parser.add_argument("--model", required=True, help="A language-based model (id or name).")
        parser.add_argument("--draws", type=int, default=20, help="Random draws per point.")
        parser.add_argument("--seed", type=int, default=0)

    def run(self, **options: Any) -> Outcome:
        target = Target.objects.filter(pk=options["target"]).select_related("judgments").first()
        if target is None:
            raise CommandError(f"No target with id {options['target']}.")
        if not 10 <= options["draws"] <= 1000:
            raise CommandError("--draws must be between 10 and 1000.")
        model = model_lookup(options["model"])
        self.note(f"Embedding the descriptions of {model.name} and drawing subsets...")
        curves = efficiency_curves(
            target=target, language=model, n_draws=options["draws"], seed=options["seed"]
        )
        lines = []
        for title, curve in (
            (f"{model.name}: score with k descriptions per stimulus", curves.descriptions),
            ("direct ratings: reliability with m ratings per pair", curves.ratings),
        ):
            if curve is None:
                lines += [title, f"  not available: {curves.ratings_problem}", ""]
                continue
            lines += [title]
            lines += table(
                ["per item", "judgments", "mean", "95% range", "draws"],
                [
                    (p.per_item, f"{p.judgments:.0f}", f"{p.mean:.3f}",
                     f"[{p.ci_low:.3f}, {p.ci_high:.3f}]", p.draws)
                    for p in curve.points
                ],
            )  # fmt: skip
            lines.append("")
        document = {
            "target": target.pk,
            "model": model.name,
            "descriptions": asdict(curves.descriptions),
            "ratings": asdict(curves.ratings) if curves.ratings else None,
            "ratings_problem": curves.ratings_problem,
        }
        return Outcome(document, lines)
