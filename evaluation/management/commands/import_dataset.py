"""Import a stimulus dataset from a file: images, audio or video as a zip of folders named by
label, or texts as a CSV, through the same all-or-nothing services as the web form."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from django.core.files import File
from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, add_user_option, table, user_lookup
from evaluation.engine.video import VIDEO_SUFFIXES
from evaluation.imports.reading import AUDIO_SUFFIXES, IMAGE_SUFFIXES, ImportProblem, csv_reader
from evaluation.imports.stimuli import (
    DEFAULT_FRAME_SAMPLING,
    dataset_import_audio,
    dataset_import_images,
    dataset_import_texts,
    dataset_import_videos,
)
from evaluation.management.lookups import EvaluationCommand
from evaluation.models import Dataset, Modality

TEXT_SUFFIXES = {".csv", ".tsv", ".txt"}


class Command(EvaluationCommand):
    help = (
        "Import a dataset of stimuli. Images, audio or video: a zip of folders named by label\n"
        "(cat/001.png, dog/bark.wav, run/clip.mp4, optionally under train/ and test/); every\n"
        "clip is decoded and checked. Texts: a UTF-8 CSV\n"
        "with a header (a text column, optional label and split columns; the delimiter is\n"
        "detected). All or nothing: a bad member or row is named and nothing is kept. A\n"
        "dataset with labels gets a labels target at once, ready for `evaluate`."
    )
    examples = """
  manage.py import_dataset digits.zip --name digits
  manage.py import_dataset clips.zip --name birdsong --modality audio
  manage.py import_dataset actions.zip --name actions --frames fps=2,max=32
  manage.py import_dataset webapp/demo_data/stsb_dev_sentences.csv --name stsb
  manage.py import_dataset reviews.tsv --name reviews --text-column body --label-column stars \\
      --split-column split --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file", metavar="FILE", help="A .zip (images, audio, video) or .csv (texts)."
        )
        parser.add_argument("--name", required=True, help="A unique name for the dataset.")
        parser.add_argument(
            "--modality",
            choices=["auto", *Modality.values],
            default="auto",
            help="Default auto: text for .csv/.tsv/.txt; for a zip, whichever of image, audio "
            "and video most of its files are.",
        )
        parser.add_argument(
            "--frames",
            default=None,
            help=f"Video: which frames models see (default {DEFAULT_FRAME_SAMPLING}: 8 spread "
            "evenly over each clip; fps=2,max=32: 2 per second, at most 32).",
        )
        parser.add_argument(
            "--text-column", default="text", help="CSV: the column holding the text."
        )
        parser.add_argument(
            "--label-column",
            default=None,
            help="CSV: the column holding the label (default: label, if the CSV has one).",
        )
        parser.add_argument(
            "--no-labels",
            action="store_true",
            help="CSV: ignore labels (same as --label-column '').",
        )
        parser.add_argument(
            "--split-column", default="", help="CSV: optional column with train/val/test."
        )
        parser.add_argument("--description", default="")
        parser.add_argument("--origin", default="", help="Where the data came from.")
        add_user_option(parser)

    def run(self, **options: Any) -> Outcome:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        modality = options["modality"]
        if modality == "auto":
            modality = guess_modality(path)
        user = user_lookup(options["user"])
        if modality != Modality.TEXT and (
            options["no_labels"]
            or options["label_column"] is not None
            or options["split_column"]
            or options["text_column"] != "text"
        ):
            raise CommandError(
                "--text-column, --label-column, --split-column and --no-labels apply to CSV texts; a zip's "
                "labels and splits are its folder names."
            )
        if options["frames"] is not None and modality != Modality.VIDEO:
            raise CommandError("--frames applies to video datasets only.")
        if modality == Modality.TEXT and not options["text_column"].strip():
            raise CommandError("Name the CSV column that holds the texts (--text-column).")
        self.note(f"Importing {path} as {modality} stimuli...")
        with path.open("rb") as handle:
            # A File knows its size, so the service applies the upload limit as for the form.
            upload = File(handle, name=path.name)
            common = {
                "name": options["name"],
                "upload": upload,
                "created_by": user,
                "description": options["description"],
                "origin": options["origin"] or f"{path.name} (command line)",
            }
            if modality == Modality.TEXT:
                dataset = dataset_import_texts(
                    **common,
                    text_column=options["text_column"],
                    label_column=_label_column(handle, options),
                    split_column=options["split_column"],
                )
            elif modality == Modality.AUDIO:
                dataset = dataset_import_audio(**common)
            elif modality == Modality.VIDEO:
                dataset = dataset_import_videos(
                    **common, frame_sampling=options["frames"] or DEFAULT_FRAME_SAMPLING
                )
            else:
                dataset = dataset_import_images(**common)
        return _outcome(dataset)


def _label_column(handle: BinaryIO, options: dict[str, Any]) -> str:
    """The label column asked for; by default ``label`` when the header has one (the
    column is optional, as the README says), else none."""
    if options["no_labels"]:
        if options["label_column"]:
            raise CommandError("--no-labels and --label-column contradict each other.")
        return ""
    if options["label_column"] is not None:
        return options["label_column"]
    try:
        header = csv_reader(handle).fieldnames or []
    except ImportProblem:
        header = []  # the service reports the problem with the file itself
    finally:
        handle.seek(0)
    return "label" if "label" in header else ""


def guess_modality(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return Modality.TEXT
    if suffix != ".zip" and not zipfile.is_zipfile(path):
        raise CommandError(
            f"Cannot tell what {path.name} holds from its name; give --modality "
            "(image, audio or video for a zip, text for a CSV)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            suffixes = Counter(
                PurePosixPath(info.filename).suffix.lower()
                for info in archive.infolist()
                if not info.is_dir()
            )
    except zipfile.BadZipFile:
        raise CommandError(f"{path.name} is not a valid zip archive.") from None
    counts = {
        Modality.IMAGE: sum(n for s, n in suffixes.items() if s in IMAGE_SUFFIXES),
        Modality.AUDIO: sum(n for s, n in suffixes.items() if s in AUDIO_SUFFIXES),
        Modality.VIDEO: sum(n for s, n in suffixes.items() if s in VIDEO_SUFFIXES),
    }
    return max(counts, key=lambda modality: counts[modality])  # ties: image, as before


def _outcome(dataset: Dataset) -> Outcome:
    labels = Counter(dataset.stimuli.values_list("label", flat=True))
    splits = Counter(dataset.stimuli.values_list("split", flat=True))
    targets = [{"id": t.pk, "kind": t.kind, "name": t.name} for t in dataset.targets.all()]
    label_counts = {label: n for label, n in sorted(labels.items()) if label}
    split_counts = {split: n for split, n in sorted(splits.items()) if split}
    document = {
        "id": dataset.pk,
        "name": dataset.name,
        "modality": dataset.modality,
        "stimulus_count": dataset.stimulus_count,
        "content_hash": dataset.content_hash,
        "frame_sampling": dataset.frame_sampling,
        "labels": label_counts,
        "unlabelled": labels.get("", 0),
        "splits": split_counts,
        "targets": targets,
    }
    lines = [
        f"Imported {dataset.stimulus_count} {dataset.modality} stimuli into {dataset.name} "
        f"(id {dataset.pk}).",
    ]
    if dataset.frame_sampling:
        lines.append(f"Models see {dataset.frame_sampling_label}.")
    if label_counts:
        lines.append(
            f"{len(label_counts)} labels"
            + (f" ({labels['']} stimuli unlabelled)" if labels.get("") else "")
            + ":"
        )
        lines.extend(table(("label", "stimuli"), list(label_counts.items())))
    else:
        lines.append("No labels: add human judgments (import_judgments) to score against.")
    if split_counts:
        lines.append("Splits: " + ", ".join(f"{s} {n}" for s, n in split_counts.items()) + ".")
    for target in targets:
        lines.append(f"Target: {target['name']} (id {target['id']}).")
    return Outcome(document=document, lines=lines)
