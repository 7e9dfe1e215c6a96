"""The compare page, from embeddings that real runs cached: heatmaps in one stimulus order,
the human scatter, CKA of A's layers against B's, neighbours and disagreements; and a
model without embeddings is named, not silently dropped."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from scipy.stats import spearmanr

from evaluation import compare, services
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.metrics import knn_entry
from tests.conftest import make_text_dataset, make_text_model
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(enqueued):
    dataset = make_text_dataset()
    rows = [
        JudgmentRow(stimuli=(a, b), value=float(7 - abs(a - b)))
        for a in range(8)
        for b in range(a + 1, 8)
    ]
    judgments = judgments_create(dataset=dataset, name="toy", kind="pairs", rows=rows)
    tfidf = services.model_register(name="tfidf", source="baseline", identifier="tfidf")
    small = make_text_model()
    run = services.run_create(
        dataset=dataset, models=[tfidf, small], metrics=[knn_entry(k=1, split="loo")]
    )
    run_steps(run)
    return judgments.target, tfidf, small


def test_comparison_uses_the_cached_embeddings(scored):
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={})
    assert [side.model for side in result.sides] == [tfidf, small] and not result.missing
    assert len(result.heatmaps) == 2
    # The scatter's Spearman is the metric's own quantity: model cosine vs mean rating.
    side, rho, _ = result.scatters[0]
    x = np.asarray(side.embedding_set.load(), dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(8, k=1)
    expected = spearmanr(np.einsum("ij,ij->i", unit[i], unit[j]), 7 - np.abs(i - j)).statistic
    assert rho == pytest.approx(expected)
    assert not result.problems
    # RSA between the two models equals scipy's Spearman of their condensed RDMs.
    vectors = [np.asarray(s.embedding_set.load(), dtype=np.float64) for s in result.sides]
    units = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vectors]
    rdms = [1 - (u @ u.T)[np.triu_indices(8, k=1)] for u in units]
    expected_rsa = spearmanr(rdms[0], rdms[1]).statistic
    assert f"tfidf x minilm: {expected_rsa:.3f}" in result.rsa
    assert result.cka is not None and "Linear CKA" in result.cka
    assert len(result.neighbours[0][1]) == 5
    assert result.stimulus not in [s for s, _ in result.neighbours[0][1]]
    assert len(result.disagreements) == 10
    gaps = [abs(row["gap"]) for row in result.disagreements]
    assert gaps == sorted(gaps, reverse=True)


def test_page_names_a_model_without_embeddings(researcher_client, scored):
    target, tfidf, _ = scored
    fresh = services.model_register(name="pixels", source="baseline", identifier="tfidf-3")
    page = researcher_client.get(
        reverse("evaluation:compare"),
        {"target": target.pk, "models": [tfidf.pk, fresh.pk], "order": "cluster"},
    ).content.decode()
    assert "pixels has no cached embeddings" in page


def test_page_renders_every_section(researcher_client, scored):
    target, tfidf, small = scored
    page = researcher_client.get(
        reverse("evaluation:compare"), {"target": target.pk, "models": [tfidf.pk, small.pk]}
    ).content.decode()
    for section in ('id="heatmaps"', 'id="scatters"', 'id="rsa"', 'id="cka"', 'id="neighbours"',
                    'id="disagreements"'):  # fmt: skip
        assert section in page


def test_outsiders_cannot_compare(client, outsider, scored):
    client.force_login(outsider)
    assert client.get(reverse("evaluation:compare")).status_code == 403


def test_a_section_that_cannot_be_computed_is_named_and_the_rest_still_shows(scored, monkeypatch):
    from evaluation.engine.errors import MetricError

    def zero_rows(*args, **kwargs):
        raise MetricError("Row 2 of x is all zeros, so its cosine similarity is undefined.")

    monkeypatch.setattr(compare, "_heatmaps", zero_rows)
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={})
    assert result.problems == ["Row 2 of x is all zeros, so its cosine similarity is undefined."]
    assert result.scatters and result.neighbours and result.cka
