"""Captions of videos feed language-based models and stacking exactly as captions of images
or words do: nothing in that path looks at what the stimuli are."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from evaluation import services
from evaluation.imports.descriptions import descriptions_import
from evaluation.imports.judgments import judgments_import
from evaluation.imports.stimuli import dataset_import_videos
from evaluation.metrics import pair_alignment_entry
from evaluation.models import Score
from evaluation.stacking import stacked_create
from tests import videos
from tests.evaluation.test_dataset_import import zip_of
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128,) * 3}
MOTIONS = ("left", "right", "none")


@pytest.fixture
def captioned_clips(tmp_path):
    """Twelve clips (colour x motion), a caption each, and ratings in which colour counts
    three times as much as motion."""
    members, captions, kinds = {}, ["stimulus,text"], {}
    for (label, colour), motion in itertools.product(COLOURS.items(), MOTIONS):
        name = f"{label}/{motion}.webm"
        path = videos.synthetic_clip(tmp_path / f"{label}-{motion}.webm", colour=colour,
                                     motion=motion, frames=8)  # fmt: skip
        members[name] = path.read_bytes()
        captions.append(f"{name},a {label} square {'still' if motion == 'none' else motion}")
        kinds[name] = (label, motion)
    dataset = dataset_import_videos(
        name="captioned clips", upload=zip_of(members), frame_sampling="4"
    )
    noise = np.random.default_rng(0)
    ratings = ["a,b,value"] + [
        f"{a},{b},{1 + 3 * (kinds[a][0] == kinds[b][0]) + (kinds[a][1] == kinds[b][1]) + noise.uniform(0, 0.5):.3f}"
        for a, b in itertools.combinations(members, 2)
    ]
    judgments = judgments_import(
        file=io.BytesIO("\n".join(ratings).encode()), format="pairs", name="clip ratings",
        dataset=dataset, scale_min=1, scale_max=5.5,
    )  # fmt: skip
    descriptions_import(dataset=dataset, upload=io.BytesIO("\n".join(captions).encode()),
                        origin="captions v1")  # fmt: skip
    return dataset, judgments


def test_captions_of_videos_score_against_people_and_stack_with_a_frame_model(
    captioned_clips,
    enqueued,
):
    dataset, judgments = captioned_clips
    language = services.model_register(
        name="captions by tf-idf", source="language", identifier="captions v1 | tfidf",
        modality="video",
    )  # fmt: skip
    pixels = services.model_register(name="pixels", source="baseline", identifier="pixels-16")
    run = services.run_create(dataset=dataset, models=[language, pixels],
                              metrics=[pair_alignment_entry()])  # fmt: skip
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", list(run.steps.values_list("error_message", flat=True))
    scores = {s.model.name: s for s in Score.objects.filter(run=run)}
    # The captions name the colour people weigh most: the language model tracks them.
    assert scores["captions by tf-idf"].value > 0.6
    assert scores["pixels"].details["frames"] == "4 frames spread evenly over each clip"

    stacked = stacked_create(
        target=judgments.target, language=language, dnns=[pixels], calibration_size=5
    )
    assert stacked.model.source == "stacked" and stacked.n > 0
    assert -1 <= stacked.value <= 1 and stacked.details["language"] == "captions by tf-idf"
