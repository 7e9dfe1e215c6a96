"""The Nili et al. noise-ceiling bounds of stored judgments: judgments_create keeps them in the
reliability beside the split-half ceiling (which stays the scores' ceiling), the dataset and
study pages and the import command show them."""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
from django.core.management import call_command
from django.template.defaultfilters import floatformat
from django.urls import reverse

from annotation import selectors
from annotation import services as study_services
from annotation.services import Answer, ItemPlan
from evaluation.engine.metrics.ceilings import choice_bounds, nili_bounds
from evaluation.engine.metrics.human import split_half_reliability
from evaluation.judgments import JudgmentRow, judgments_create, target_data
from tests.conftest import make_text_dataset

pytestmark = pytest.mark.django_db
keys = (f"ceiling-key-{n}" for n in itertools.count())


def rating_rows(participants: int, *, named: bool = True, seed: int = 0) -> list[JudgmentRow]:
    """Every pair of the 8 sentences rated 1-7 by each participant: a shared truth plus each
    participant's own noise."""
    rng = np.random.default_rng(seed)
    pairs = list(itertools.combinations(range(8), 2))
    truth = rng.normal(size=len(pairs))
    rows = []
    for p in range(participants):
        for (a, b), t in zip(pairs, truth, strict=True):
            value = float(np.clip(np.round(t * 1.5 + 4 + rng.normal()), 1, 7))
            rows.append(JudgmentRow((a, b), value=value, participant=f"p{p}" if named else ""))
    return rows


def columns(rows: list[JudgmentRow]) -> tuple[list[int], list[int], list[float], list[str]]:
    return (
        [r.stimuli[0] for r in rows],
        [r.stimuli[1] for r in rows],
        [float(r.value or 0) for r in rows],
        [r.participant for r in rows],
    )


def shown(bounds: dict) -> str:
    """The bounds as the pages write them (Django's floatformat, three places)."""

    def bound(name: str) -> str:
        low, high = bounds[f"{name}_ci"]
        return (
            f"{name} {floatformat(bounds[name], 3)} [{floatformat(low, 3)}, {floatformat(high, 3)}]"
        )

    return f"Noise ceiling (Nili et al. 2014): {bound('lower')}, {bound('upper')}"


def test_pair_ratings_with_participants_store_the_bounds_beside_the_split_half_ceiling():
    rows = rating_rows(6)
    judgments = judgments_create(
        dataset=make_text_dataset(), name="ratings", kind="pairs", rows=rows, scale_min=1,
        scale_max=7,
    )  # fmt: skip
    judgments.refresh_from_db()  # as stored (JSON)
    a, b, values, who = columns(rows)
    split_half = split_half_reliability(a, b, values, who)
    bounds = judgments.reliability.pop("bounds")
    assert judgments.reliability == split_half  # the split-half keys, unchanged
    assert judgments.ceiling == split_half["mean"] == target_data(judgments.target).ceiling
    assert bounds == nili_bounds(a, b, values, who)
    assert bounds["participants"] == 6 and bounds["correlation"] == "spearman"
    assert bounds["lower_ci"][0] < bounds["lower"] < bounds["upper"] < bounds["upper_ci"][1]


def test_pair_ratings_without_participants_keep_the_reason_instead_of_bounds():
    rows = rating_rows(3, named=False)
    judgments = judgments_create(
        dataset=make_text_dataset(), name="pooled", kind="pairs", rows=rows
    )
    assert judgments.ceiling is not None  # split by judgment within pair, as before
    bounds = judgments.reliability["bounds"]
    assert bounds["lower"] is None and bounds["upper"] is None
    assert "name no participants" in bounds["reason"]


def test_triplets_store_the_choice_bounds_whose_lower_is_the_ceiling():
    rng = np.random.default_rng(1)
    triplets = [(0, 1, 2), (3, 4, 5), (1, 6, 7), (0, 4, 7)]
    rows = [
        JudgmentRow(t, chosen=t[int(rng.choice(3, p=[0.7, 0.2, 0.1]))], participant=f"p{p}")
        for p in range(8)
        for t in triplets
    ]
    judgments = judgments_create(
        dataset=make_text_dataset(), name="odd one out", kind="triplets", rows=rows
    )
    bounds = judgments.reliability["bounds"]
    assert bounds["lower"] == judgments.ceiling == judgments.reliability["mean"]
    assert bounds["upper"] >= bounds["lower"]
    assert bounds["participants"] == 8 and bounds["items"] == 4
    keys_ = np.array([sorted(r.stimuli) for r in rows])
    chosen = np.array([r.chosen for r in rows])
    assert bounds == choice_bounds(keys_, chosen, [r.participant for r in rows])


def test_the_dataset_page_shows_the_bounds_beside_the_ceiling(researcher_client):
    dataset = make_text_dataset()
    judgments = judgments_create(
        dataset=dataset, name="ratings", kind="pairs", rows=rating_rows(5, seed=2)
    )
    judgments_create(
        dataset=dataset, name="pooled", kind="pairs", rows=rating_rows(2, named=False, seed=3)
    )
    page = researcher_client.get(dataset.get_absolute_url()).content.decode()
    bounds = judgments.reliability["bounds"]
    assert f"ceiling {floatformat(judgments.ceiling, 3)} (split-half, Spearman-Brown)" in page
    assert f"{shown(bounds)}, over 5 participants" in page
    assert "No noise-ceiling bounds: the ratings name no participants" in page


def test_the_study_page_shows_the_bounds_of_its_responses(client, researcher):
    study = study_services.study_create(
        dataset=make_text_dataset(name="sentences for a study"),
        name="Sentence similarity",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=4,
        trials_per_session=28,
        created_by=researcher,
    )
    study_services.study_set_status(study=study, status="open")
    rng = np.random.default_rng(4)
    truth = {pair: rng.normal() for pair in itertools.combinations(range(100), 2)}
    for external_id in ("P1", "P2", "P3", "P4"):
        participant = study_services.participant_start(study=study, external_id=external_id)
        while (trial := study_services.trial_current(participant=participant)) is not None:
            pair = tuple(sorted((trial.item.a.order, trial.item.b.order)))
            value = int(np.clip(round(truth[pair] * 1.5 + 4 + rng.normal() * 0.8), 1, 7))
            study_services.response_submit(
                participant=participant,
                answer=Answer(
                    trial_id=trial.pk, idempotency_key=next(keys), value=value, rt_ms=1500
                ),
            )
    reliability = selectors.study_reliability(study)
    bounds = reliability["bounds"]
    assert bounds["participants"] == 4 and bounds["pairs"] == 28
    assert "bounds" not in (selectors.study_reliability(study, limit=40) or {})  # trend points
    client.force_login(researcher)
    page = client.get(reverse("annotation:study_detail", args=[study.pk])).content.decode()
    noise_ceiling = re.search(r'<p id="noise-ceiling">(.*?)</p>', page, re.S)
    assert noise_ceiling, "the study page does not show the noise-ceiling bounds"
    assert f"{shown(bounds)}, over 4 participants" in noise_ceiling.group(1)


def test_the_import_command_prints_the_bounds(tmp_path, researcher):
    dataset = make_text_dataset()
    texts = list(dataset.stimuli.order_by("order").values_list("text", flat=True))
    rows = rating_rows(4, seed=5)
    upload = tmp_path / "ratings.csv"
    upload.write_text(
        "a,b,value,participant\n"
        + "".join(
            f'"{texts[r.stimuli[0]]}","{texts[r.stimuli[1]]}",{r.value},{r.participant}\n'
            for r in rows
        )
    )
    out = io.StringIO()
    call_command(
        "import_judgments", str(upload), "--format", "pairs", "--name", "pilot",
        "--dataset", str(dataset.pk), "--match", "text", stdout=out,
    )  # fmt: skip
    printed = out.getvalue()
    bounds = nili_bounds(*columns(rows))
    low, high = bounds["lower_ci"]
    assert (
        f"Noise ceiling (Nili et al. 2014): lower {bounds['lower']:.3f} [{low:.3f}, {high:.3f}]"
        in printed
    )
    assert "over 4 participants (95% CIs: percentile bootstrap over participants" in printed
