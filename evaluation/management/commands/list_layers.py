"""List a registered model's layers with their output shapes, as a worker recorded them (or,
with --inspect, by loading the model here), to pick layers for ``evaluate --layers``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from core.cli import Outcome, table
from evaluation import services
from evaluation.management.lookups import EvaluationCommand, model_lookup


class Command(EvaluationCommand):
    help = (
        "List a model's layers (name, output shape per stimulus) in forward order.\n"
        "A worker lists them once after registration (one dry forward pass); until then the\n"
        "model's layers are 'pending'. --inspect loads the model in this process and lists\n"
        "them now (it needs the weights: local files, a package, or untrained)."
    )
    examples = """
  manage.py list_layers resnet18-untrained
  manage.py list_layers 12 --json
  manage.py list_layers minilm --inspect
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("model", metavar="MODEL", help="Model id, name or identifier.")
        parser.add_argument(
            "--inspect",
            action="store_true",
            help="Load the model here and list its layers now, instead of waiting for a worker.",
        )

    def run(self, **options: Any) -> Outcome:
        model = model_lookup(options["model"])
        if options["inspect"]:
            self.note(f"Loading {model.display_name} to list its layers...")
            services.model_inspect(model_id=model.pk)
            model.refresh_from_db()
        state = model.inspection_state
        status = "listed" if state == "done" else state
        layers = [
            {"index": index, "name": layer["name"], "shape": layer.get("shape")}
            for index, layer in enumerate(model.layers or [])
        ]
        document = {
            "model": {
                "id": model.pk,
                "name": model.name,
                "source": model.source,
                "identifier": model.identifier,
                "weights": model.weights,
                "modality": model.modality,
                "default_layer": model.default_layer,
                "parameter_count": model.parameter_count,
                "embedding_size": model.embedding_size,
            },
            "status": status,
            "error": model.inspection_error,
            "layers": layers,
        }
        outcome = Outcome(document=document)
        heading = f"{model.display_name} (id {model.pk}, {model.source} {model.identifier})"
        if status == "failed":
            outcome.error = (
                f"The layers of {model.name} could not be listed: {model.inspection_error}"
            )
            outcome.lines = [heading]
        elif status == "waiting_for_queue":
            outcome.lines = [
                heading,
                "Layers not listed yet: the task queue was unreachable when the model was "
                "registered; a worker sends the task once it answers. --inspect lists them "
                "now, in this process.",
            ]
        elif status == "pending":
            outcome.lines = [
                heading,
                "Layers not listed yet: a worker lists them after registration (is one "
                "running?). --inspect lists them now, in this process.",
            ]
        else:
            rows = [
                (
                    layer["index"],
                    layer["name"] + (" (default)" if layer["name"] == model.default_layer else ""),
                    "x".join(str(n) for n in layer["shape"] or []) or "-",
                )
                for layer in layers
            ]
            outcome.lines = [heading, *table(("#", "layer", "shape"), rows)]
        return outcome
