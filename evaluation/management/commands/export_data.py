"""Data for a notebook: a model's embeddings, its similarity matrix, a human target as a
pair table or a matrix, and the per-pair table with models' similarities (the same files as
the web pages and the API)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, atomic_output
from evaluation import downloads
from evaluation.management.lookups import (
    EvaluationCommand,
    dataset_lookup,
    model_lookup,
    models_lookup,
)
from evaluation.models import Target

WHAT = ("embeddings", "similarity", "human", "pairs")


class Command(EvaluationCommand):
    help = (
        "Write data for a notebook to a file:\n"
        "  embeddings  a model's cached embeddings of a dataset (npy, npz, parquet, csv)\n"
        "  similarity  their cosine similarity matrix (npy or csv, float32)\n"
        "  human       a pair target as the metrics score it (--shape pairs: csv; matrix: npy\n"
        "              or csv, NaN where no pair was judged)\n"
        "  pairs       per pair of a target: the human value and each model's similarity (csv)\n"
        "Rows follow the dataset's stimulus order, with stimulus ids and names."
    )
    examples = """
  manage.py export_data embeddings --model minilm --dataset stsb --format npz -o minilm.npz
  manage.py export_data similarity --model minilm --dataset stsb -o minilm-similarity.npy
  manage.py export_data human --target 12 --shape matrix --format npy -o people.npy
  manage.py export_data pairs --target 12 --models 'minilm,resnet*' -o pairs.csv
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("what", choices=WHAT)
        parser.add_argument("-o", "--output", required=True, metavar="FILE")
        parser.add_argument("--model", help="embeddings, similarity: the model (id or name).")
        parser.add_argument("--dataset", help="embeddings, similarity: the dataset (id or name).")
        parser.add_argument("--layer", default="", help="Default: the model's default layer.")
        parser.add_argument("--target", type=int, help="human, pairs: the target's id.")
        parser.add_argument("--models", help="pairs: models, comma-separated (patterns allowed).")
        parser.add_argument("--shape", choices=downloads.HUMAN_SHAPES, default="pairs")
        parser.add_argument(
            "--format", default="", help="npy, npz, parquet or csv (default: from the file name)."
        )

    def run(self, **options: Any) -> Outcome:
        download = self._download(options)
        written = 0
        with atomic_output(options["output"], binary=True) as out:
            for chunk in download.chunks:
                out.write(chunk)
                written += len(chunk)
        document = {"what": options["what"], "file": options["output"], "bytes": written}
        return Outcome(document, [f"Wrote {options['output']} ({written:,} bytes)."])

    def _download(self, options: dict[str, Any]) -> downloads.Download:
        what = options["what"]
        fmt = options["format"] or options["output"].rpartition(".")[2].lower()
        if what in ("embeddings", "similarity"):
            if not options["model"] or not options["dataset"]:
                raise CommandError(f"{what} needs --model and --dataset.")
            model = model_lookup(options["model"])
            dataset = dataset_lookup(options["dataset"])
            embedding_set = downloads.model_embeddings(model, dataset.pk, options["layer"])
            if what == "embeddings":
                return downloads.embeddings_download(embedding_set, fmt)
            return downloads.similarity_download(embedding_set, fmt)
        if options["target"] is None:
            raise CommandError(f"{what} needs --target (a target's id).")
        target = Target.objects.filter(pk=options["target"]).first()
        if target is None:
            raise CommandError(f"No target with id {options['target']}.")
        if what == "human":
            return downloads.human_download(target, shape=options["shape"], fmt=fmt)
        if not options["models"]:
            raise CommandError("pairs needs --models.")
        references = [part.strip() for part in options["models"].split(",") if part.strip()]
        return downloads.pair_table_download(target, models_lookup(references))
