"""Import embeddings computed elsewhere (another framework, private code, brain- or
behaviour-derived dimensions) as a model, through the same importer as the web form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, add_user_option, table, user_lookup
from evaluation.imports.embeddings import MATCH_RULES, embeddings_import
from evaluation.imports.spec import EMBEDDING_IMPORT_FIELDS
from evaluation.management.lookups import EvaluationCommand, dataset_lookup
from evaluation.models import EmbeddingSet

FIELDS = {field.name: field for field in EMBEDDING_IMPORT_FIELDS}


class Command(EvaluationCommand):
    help = (
        "Import embeddings computed elsewhere as a model whose runs score them (no forward\n"
        "pass): .npy (rows in the dataset's order, or ids from --ids), .npz (a layer per\n"
        "array, ids under 'ids'), thingsvision's features .txt/.hdf5/.mat, .parquet or .csv\n"
        "(an id column and the dimensions). Every stimulus once, finite values; all or nothing."
    )
    examples = """
  manage.py import_embeddings spose_49d.npy --name SPoSE-49d --dataset things-images \\
      --ids file_names.txt --provenance 'Hebart et al. 2020' --licence 'CC BY 4.0'
  manage.py import_embeddings features.hdf5 --name clip-elsewhere --dataset digits --match order
  manage.py import_embeddings vectors.parquet --name my-model --dataset stsb --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help=FIELDS["file"].help)
        parser.add_argument("--name", required=True, help=FIELDS["name"].help)
        parser.add_argument("--dataset", required=True, help="The dataset (id or name).")
        parser.add_argument("--ids", metavar="FILE", help=FIELDS["ids_file"].help)
        parser.add_argument(
            "--match", choices=MATCH_RULES, default="auto", help=FIELDS["match"].help
        )
        parser.add_argument("--provenance", default="", help=FIELDS["provenance"].help)
        parser.add_argument("--link", default="", help=FIELDS["link"].help)
        parser.add_argument("--licence", default="", help=FIELDS["licence"].help)
        add_user_option(parser)

    def run(self, **options: Any) -> Outcome:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        ids_path = Path(options["ids"]) if options["ids"] else None
        if ids_path is not None and not ids_path.is_file():
            raise CommandError(f"No ids file {ids_path}.")
        dataset = dataset_lookup(options["dataset"])
        user = user_lookup(options["user"])
        self.note(f"Importing embeddings of {dataset.name} from {path}...")
        with path.open("rb") as handle:
            upload = File(handle, name=str(path))
            upload.size = path.stat().st_size  # the upload limit applies here too
            ids = ids_path.open("rb") if ids_path else None
            try:
                model = embeddings_import(
                    name=options["name"], dataset=dataset, file=upload, ids_file=ids,
                    match=options["match"], provenance=options["provenance"],
                    link=options["link"], licence=options["licence"], created_by=user,
                )  # fmt: skip
            finally:
                if ids is not None:
                    ids.close()
        sets = list(EmbeddingSet.objects.filter(model=model).order_by("layer"))
        document = {
            "model": {"id": model.pk, "name": model.name, "source": model.source},
            "dataset": {"id": dataset.pk, "name": dataset.name},
            "provenance": model.provenance,
            "embedding_sets": [
                {"id": e.pk, "layer": e.layer, "count": e.count, "dim": e.dim} for e in sets
            ],
        }
        lines = [
            f"Imported {model.name} (id {model.pk}): {len(sets)} layer(s) of {dataset.name}, "
            f"matched by {model.provenance['matched_by']}.",
            *table(["layer", "stimuli", "dims"], [(e.layer, e.count, e.dim) for e in sets]),
        ]
        return Outcome(document, lines)
