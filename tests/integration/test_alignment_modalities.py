"""Human alignment of images, audio and video, each through a real Celery worker on Redis and
PostgreSQL, on stimuli whose answer is known before anything runs.

Images and videos are solid colours: raw pixels (for a video, every sampled frame, averaged)
are then the colour itself, so the cosine similarity a pixels model gives each pair follows
from the colours alone. "People" rate pairs by exactly that similarity, so the Spearman
alignment must be 1, and with the ratings given to the wrong pairs it must not be. Audio:
tones embedded by a small wav2vec2 saved locally; the ratings are that model's similarities,
computed here through the engine directly, so the worker's score must again be 1.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import services
from evaluation.engine.adapters import load_adapter
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.video import write_clip
from evaluation.imports.judgments import judgments_import
from evaluation.imports.stimuli import (
    dataset_import_audio,
    dataset_import_images,
    dataset_import_videos,
)
from evaluation.metrics import pair_alignment_entry
from evaluation.models import Run, Score
from tests.evaluation.test_audio_datasets import tiny_wav2vec2, wav_bytes  # noqa: F401 (fixture)
from tests.evaluation.test_dataset_import import zip_of
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def separated_colours(count: int = 6, gap: float = 0.02) -> np.ndarray:
    """Colours whose pairwise cosine similarities differ by at least ``gap``: far more than
    what video compression changes, so their order is the known answer."""
    rng = np.random.default_rng(0)
    while True:
        colours = rng.integers(20, 236, size=(count, 3))
        sims = np.sort([cosine(a, b) for a, b in itertools.combinations(colours, 2)])
        if np.diff(sims).min() > gap and sims.max() < 0.98:
            return colours


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def png(colour: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), tuple(int(c) for c in colour)).save(out, "PNG")
    return out.getvalue()


def webm(colour: np.ndarray, folder: Path, name: str) -> bytes:
    path = folder / f"{name}.webm"
    frame = np.empty((48, 64, 3), dtype=np.uint8)
    frame[:] = colour
    write_clip(path, [frame] * 12, fps=8)
    return path.read_bytes()


def ratings_csv(names: list[str], similarity: dict[tuple[str, str], float]) -> io.BytesIO:
    """One rating per pair, 1-7, rising with ``similarity``."""
    low, high = min(similarity.values()), max(similarity.values())
    rows = ["a,b,value"] + [
        f"{a},{b},{1 + 6 * (similarity[a, b] - low) / (high - low):.6f}"
        for a, b in itertools.combinations(names, 2)
    ]
    return io.BytesIO("\n".join(rows).encode())


def alignment_on_a_real_worker(start_worker, dataset, model, similarity) -> Score:
    names = list(dataset.stimuli.order_by("order").values_list("name", flat=True))
    judgments_import(
        file=ratings_csv(names, similarity), format="pairs", name=f"{dataset.name} ratings",
        dataset=dataset, scale_min=1, scale_max=7,
    )  # fmt: skip
    worker = start_worker()
    run = services.run_create(dataset=dataset, models=[model], metrics=[pair_alignment_entry()])

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout=180, message=worker.log)
    assert run.status == "succeeded", (
        f"{run.error_message} {list(run.steps.values_list('error_message', flat=True))}"
    )
    return Score.objects.get(run=Run.objects.get(pk=run.pk), metric="pair_alignment")


def pixels_model():
    return services.model_register(name="pixels", source="baseline", identifier="pixels-16")


def colour_similarity(names: list[str], colours: np.ndarray) -> dict[tuple[str, str], float]:
    return {
        (names[i], names[j]): cosine(colours[i], colours[j])
        for i, j in itertools.combinations(range(len(names)), 2)
    }


def test_image_alignment_on_a_real_worker_equals_the_known_answer(start_worker):
    colours = separated_colours()
    members = {f"c{i}/patch.png": png(c) for i, c in enumerate(colours)}
    dataset = dataset_import_images(name="colour patches", upload=zip_of(members))
    names = list(members)
    score = alignment_on_a_real_worker(
        start_worker, dataset, pixels_model(), colour_similarity(names, colours)
    )
    assert score.value == pytest.approx(1.0)
    assert score.ci_low <= score.value <= score.ci_high


def test_video_alignment_frame_by_frame_on_a_real_worker_equals_the_known_answer(
    start_worker, tmp_path
):
    colours = separated_colours()
    members = {f"c{i}/clip.webm": webm(c, tmp_path, f"c{i}") for i, c in enumerate(colours)}
    dataset = dataset_import_videos(
        name="colour clips", upload=zip_of(members), frame_sampling="frames=4"
    )
    names = list(members)
    similarity = colour_similarity(names, colours)
    model = pixels_model()
    score = alignment_on_a_real_worker(start_worker, dataset, model, similarity)
    assert score.value == pytest.approx(1.0)
    assert score.details["frames"] == "4 frames spread evenly over each clip"
    assert score.embedding_set.preprocessing["frame_sampling"] == {"frames": 4}

    # The same ratings given to the wrong pairs: no longer the known answer.
    shuffled = dict(zip(similarity, np.roll(list(similarity.values()), 3), strict=True))
    wrong = dataset_import_videos(name="colour clips again", upload=zip_of(members))
    mislabelled = alignment_on_a_real_worker(start_worker, wrong, model, shuffled)
    assert mislabelled.value < 0.8


def test_audio_alignment_on_a_real_worker_equals_the_known_answer(start_worker, tiny_wav2vec2):  # noqa: F811
    members = {f"tone{i}/clip.wav": wav_bytes(150 * 1.6**i) for i in range(6)}
    dataset = dataset_import_audio(name="tones", upload=zip_of(members))
    spec = ModelSpec(source="transformers-audio", identifier=str(tiny_wav2vec2))
    adapter = load_adapter(spec)
    files = dataset.stimuli.order_by("order")
    inputs = [StimulusInput(path=s.file.path, meta={"name": s.name}) for s in files]
    with torch.inference_mode():
        vectors = adapter.embed(
            adapter.collate([adapter.load_input(item) for item in inputs]),
            layers=[adapter.default_layer],
        )[adapter.default_layer]
    names = [s.name for s in files]
    similarity = {
        (names[i], names[j]): cosine(vectors[i], vectors[j])
        for i, j in itertools.combinations(range(len(names)), 2)
    }
    model = services.model_register(
        name="tiny w2v", source="transformers-audio", identifier=str(tiny_wav2vec2)
    )
    score = alignment_on_a_real_worker(start_worker, dataset, model, similarity)
    assert score.value == pytest.approx(1.0)
