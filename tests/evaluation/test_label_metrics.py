"""Every label metric can be asked for in a run and stores the engine's value with its CI."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse

from evaluation import services
from evaluation.engine.metrics import probes
from evaluation.metrics import probe_entry
from evaluation.models import Run, Score
from tests.conftest import make_image_dataset, make_timm_model
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


def test_label_probes_through_a_run(digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    entries = [
        probe_entry("weighted_knn"),
        probe_entry("nearest_class_mean"),
        probe_entry("linear_probe"),
        probe_entry("few_shot", n_way=5, k_shot=1, n_query=5),
        probe_entry("retrieval_map"),
        probe_entry("kmeans_nmi"),
    ]
    run = services.run_create(dataset=dataset, models=[make_timm_model()], metrics=entries)
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    scores = {s.metric: s for s in Score.objects.filter(run=run)}
    assert set(scores) == {e["name"] for e in entries}
    for score in scores.values():
        assert score.ci_low <= score.value <= score.ci_high, score.metric
    embeddings = scores["weighted_knn"].embedding_set.load()
    labels = np.array(list(dataset.stimuli.order_by("order").values_list("label", flat=True)))
    assert scores["weighted_knn"].value == probes.weighted_knn_accuracy(embeddings, labels).value
    assert scores["few_shot"].n == 600 and "recall@1" in scores["retrieval_map"].details
    assert "ari" in scores["kmeans_nmi"].details


def test_run_form_posts_label_probes(researcher_client, digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    response = researcher_client.post(
        reverse("evaluation:run_create"),
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            "metric_linear_probe": "on",
            "metric_few_shot": "on",
            "few_shot_k": "5",
            "knn_k": 5,
            "knn_split": "loo",
        },
    )
    assert response.status_code == 302
    assert Run.objects.get().metrics == [
        {"name": "linear_probe", "params": {}},
        {"name": "few_shot", "params": {"n_way": 5, "k_shot": 5}},
    ]


def test_baselines_run_like_models_and_are_labelled(digits_zip_small, client):
    dataset = make_image_dataset(data=digits_zip_small)
    pixels = services.model_register(name="pixels", source="baseline", identifier="pixels-16")
    assert pixels.modality == "image" and pixels.display_name == "pixels (baseline)"
    run = services.run_create(
        dataset=dataset, models=[pixels], metrics=[probe_entry("nearest_class_mean")]
    )
    run_steps(run)
    score = Score.objects.get(run=run)
    assert score.layer == "pixels" and score.embedding_set.dim == 16 * 16 * 3
    assert "baseline" in client.get(score.target.get_absolute_url()).content.decode()
