"""import_dataset, import_judgments and list_layers: the web forms' options on the command
line, results as text or JSON, and bad input refused in one line with nothing stored."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from evaluation import services
from evaluation.models import Dataset, HumanJudgments, Judgment, PretrainedModel, Stimulus, Target
from tests.cli.conftest import cli, cli_fails
from tests.conftest import SHARED_DATA, make_text_dataset, make_timm_model
from tests.evaluation.closed_broker import closed_broker  # noqa: F401  (fixture)
from tests.evaluation.test_audio_datasets import tones_zip
from webapp.demo import digits_zip

pytestmark = pytest.mark.django_db


def stored() -> dict[str, int]:
    kinds = (Dataset, Stimulus, Target, HumanJudgments, Judgment)
    return {kind.__name__: kind.objects.count() for kind in kinds}


def media_files(settings) -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


# --- import_dataset ------------------------------------------------------------------------
def test_image_zip_is_imported_with_labels_and_a_target(tmp_path, researcher, settings):
    archive = tmp_path / "digits.zip"
    archive.write_bytes(digits_zip(limit=40))
    printed = cli("import_dataset", str(archive), "--name", "digits", "--user", "rita", "--json")
    document = printed.document
    dataset = Dataset.objects.get(name="digits")
    assert document["id"] == dataset.pk and document["modality"] == "image"
    assert document["stimulus_count"] == 40 == dataset.stimuli.count()
    with zipfile.ZipFile(archive) as members:  # labels are the zip's folder names
        folders = Counter(Path(name).parent.name for name in members.namelist() if "." in name)
    assert document["labels"] == dict(folders) and len(folders) == 10
    assert document["targets"] == [
        {"id": dataset.targets.get().pk, "kind": "labels", "name": "digits: labels"}
    ]
    assert dataset.created_by == researcher and dataset.origin == "digits.zip (command line)"
    assert len(media_files(settings)) == 40
    assert "Importing" in printed.stderr and "Importing" not in printed.stdout


def test_audio_zip_is_recognised_by_its_files(tmp_path):
    archive = tmp_path / "tones.zip"
    archive.write_bytes(tones_zip().getvalue())
    printed = cli("import_dataset", str(archive), "--name", "tones")
    assert Dataset.objects.get(name="tones").modality == "audio"
    assert printed.stdout.startswith("Imported 12 audio stimuli into tones")


def test_csv_texts_with_chosen_columns_and_optional_labels(tmp_path):
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text(
        "body\tstars\tpart\n"
        "Great phone, lasts all day.\tgood\ttrain\n"
        "Broke after a week.\tbad\ttrain\n"
        "Love the screen.\tgood\ttest\n"
        "Would not buy again.\tbad\ttest\n"
    )
    document = cli(
        "import_dataset",
        str(reviews),
        "--name",
        "reviews",
        "--text-column",
        "body",
        "--label-column",
        "stars",
        "--split-column",
        "part",
        "--json",
    ).document
    assert document["modality"] == "text" and document["stimulus_count"] == 4
    assert document["labels"] == {"bad": 2, "good": 2}
    assert document["splits"] == {"test": 2, "train": 2}

    # No label column in the file: the default label column is simply absent (it is optional).
    plain = tmp_path / "plain.csv"
    plain.write_text("text\nOne sentence.\nAnother one.\n")
    document = cli("import_dataset", str(plain), "--name", "plain", "--json").document
    assert document["labels"] == {} and document["targets"] == []
    assert document["unlabelled"] == 2


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        # A zip member that would escape the dataset folder.
        (
            lambda p: _zip(p, {"cat/1.png": _png(), "../evil.png": _png()}),
            (),
            "Refused: the zip member '../evil.png' points outside the archive (..).",
        ),
        (
            lambda p: _zip(p, {"cat/1.png": b"not an image"}),
            (),
            "cat/1.png",
        ),
        (
            lambda p: p.with_suffix(".csv").write_text("text,label\nfine,a\n,b\n"),
            (),
            "Row 3: the text column 'text' is empty.",
        ),
        (
            lambda p: p.with_suffix(".csv").write_text("words\nhello\n"),
            (),
            "The CSV has no text column 'text'",
        ),
        (
            lambda p: p.with_suffix(".csv").write_text("text,label\nhello,a\n"),
            ("--label-column", "kind"),
            "no label column 'kind'",
        ),
        (
            lambda p: _zip(p, {"cat/1.png": _png()}),
            ("--split-column", "part"),
            "apply to CSV texts",
        ),
    ],
)
def test_bad_files_are_refused_in_one_line_and_nothing_is_kept(
    tmp_path, settings, make, args, message
):
    path = tmp_path / "upload.zip"
    make(path)
    if not path.exists():
        path = path.with_suffix(".csv")
    error, _ = cli_fails("import_dataset", str(path), "--name", "broken", *args)
    assert message in str(error) and "\n" not in str(error)
    assert stored() == dict.fromkeys(stored(), 0)
    assert media_files(settings) == []


def test_a_taken_name_and_a_missing_file_are_refused(tmp_path):
    make_text_dataset(name="sentences")
    before = stored()
    texts = tmp_path / "t.csv"
    texts.write_text("text\nhello\n")
    error, printed = cli_fails("import_dataset", str(texts), "--name", "sentences", "--json")
    assert str(error) == "name: A dataset called 'sentences' already exists."
    assert printed.document == {"error": str(error)}
    error, _ = cli_fails("import_dataset", str(tmp_path / "none.csv"), "--name", "x")
    assert str(error) == f"No file {tmp_path / 'none.csv'}."
    assert stored() == before


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


# --- import_judgments ----------------------------------------------------------------------
def test_simlex_pairs_make_a_new_word_dataset_with_a_pairs_target(tmp_path, researcher):
    simlex = SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt"
    rows = [line.split("\t") for line in simlex.read_text().splitlines()]
    upload = tmp_path / "simlex.tsv"
    upload.write_text("a\tb\tvalue\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    printed = cli(
        "import_judgments",
        str(upload),
        "--format",
        "pairs",
        "--name",
        "SimLex-999",
        "--new-dataset",
        "simlex-words",
        "--scale-min",
        "0",
        "--scale-max",
        "10",
        "--user",
        "rita",
        "--json",
    )
    document = printed.document
    judgments = HumanJudgments.objects.get()
    words = {w for a, b, _ in rows for w in (a, b)}
    assert document["judgment_count"] == 999 == judgments.rows.count()
    assert document["dataset"] == {
        "id": judgments.dataset_id,
        "name": "simlex-words",
        "created": True,
        "stimulus_count": len(words),
    }
    assert document["scale"] == [0.0, 10.0] and document["version"] == 1
    assert document["target"]["id"] == judgments.target.pk
    assert judgments.created_by == researcher
    # One mean rating per pair, no participants: there is no split-half ceiling, and it says why.
    assert document["ceiling"] is None and document["reliability"]["reason"]


def test_pairs_matched_by_text_to_an_existing_dataset_become_version_two(tmp_path):
    dataset = make_text_dataset(name="sentences")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(
        "a,b,value,participant\n"
        '"a cat sits on the mat.","Kittens play with yarn.",6,p1\n'
        '"A cat sits on the mat.","Stocks fell sharply today.",1,p1\n'
        '"A cat sits on the mat.","Kittens play with yarn.",5,p2\n'
    )
    args = ("import_judgments", str(ratings), "--format", "pairs", "--name", "pilot")
    first = cli(*args, "--dataset", "sentences", "--match", "text", "--json").document
    second = cli(*args, "--dataset", str(dataset.pk)).stdout
    assert first["dataset"]["created"] is False and first["participant_count"] == 2
    assert "as pilot v2" in second and "over sentences (8 stimuli)" in second
    assert Dataset.objects.count() == 1  # the existing dataset is never changed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "triplets", "--dataset", "sentences", "--scale-min", "1"), "scale min:"),
        (("--format", "pairs", "--dataset", "nothing"), "No dataset with id or name 'nothing'"),
        (("--format", "pairs", "--new-dataset", "w", "--match", "text"), "--match applies"),
        (("--format", "pairs", "--new-dataset", "sentences"), "already exists"),
        (("--format", "pairs", "--dataset", "sentences"), "Row 3"),
        (("--format", "matrix", "--dataset", "sentences", "--symmetrize"), "file:"),
        (("--format", "pairs", "--dataset", "sentences", "--scale-min", "nan"), "finite"),
    ],
)
def test_bad_judgment_imports_store_nothing(tmp_path, args, message):
    make_text_dataset(name="sentences")
    before = stored()
    bad = tmp_path / "bad.csv"
    bad.write_text('a,b,value\n"A cat sits on the mat.","Kittens play with yarn.",3\nx,y,oops\n')
    error, _ = cli_fails("import_judgments", str(bad), "--name", "bad", *args)
    assert message in str(error) and "\n" not in str(error)
    assert stored() == before


# --- list_layers -----------------------------------------------------------------------------
def test_layers_pending_then_listed_in_process(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(
        "evaluation.services.queue._enqueue", lambda name, model_id: None
    )  # the broker took it
    with django_capture_on_commit_callbacks(execute=True):
        model = make_timm_model("tiny-vit", "test_vit")
    pending = cli("list_layers", "tiny-vit", "--json").document
    assert pending["status"] == "pending" and pending["layers"] == []
    assert "--inspect lists them now" in cli("list_layers", str(model.pk)).stdout

    listed = cli("list_layers", "test_vit", "--inspect", "--json").document  # by identifier
    model.refresh_from_db()
    assert listed["status"] == "listed"
    assert [layer["name"] for layer in listed["layers"]] == model.layer_names
    assert listed["layers"][0] == {
        "index": 0,
        "name": "pre_logits",
        "shape": model.layers[0]["shape"],
    }
    text = cli("list_layers", "tiny-vit").stdout
    assert "pre_logits (default)" in text and "blocks.0" in text


def test_failed_inspection_and_unknown_or_ambiguous_models_exit_non_zero():
    model = make_timm_model("tiny-vit", "test_vit")
    PretrainedModel.objects.filter(pk=model.pk).update(inspection_error="Weights not found.")
    error, printed = cli_fails("list_layers", "tiny-vit", "--json")
    assert str(error) == "The layers of tiny-vit could not be listed: Weights not found."
    assert printed.document["status"] == "failed"  # the document, then the error
    services.model_register(name="tiny-vit-2", source="timm", identifier="test_vit", seed=1)
    error, _ = cli_fails("list_layers", "test_vit")
    assert "is the identifier of several models" in str(error)
    error, _ = cli_fails("list_layers", "tiny-vt")
    assert (
        str(error)
        == "No model with id, name or identifier 'tiny-vt'. Did you mean: tiny-vit, tiny-vit-2?"
    )
    assert json.loads(cli_fails("list_layers", "999999", "--json")[1].stdout)["error"]


def test_layers_waiting_for_the_queue_say_so(
    closed_broker,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    """Registered while the broker was down: the inspection waits for the workers' sweep."""
    with django_capture_on_commit_callbacks(execute=True):  # the send is tried, and refused
        model = make_timm_model("tiny-vit", "test_vit")
    assert cli("list_layers", "tiny-vit", "--json").document["status"] == "waiting_for_queue"
    assert "the task queue was unreachable" in cli("list_layers", str(model.pk)).stdout
