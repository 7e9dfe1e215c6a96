"""Layer listing and layer sweeps: every chosen layer is scored, layers share one forward
pass, and each layer's embeddings are cached on their own."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from evaluation import services
from evaluation.metrics import knn_entry
from evaluation.models import EmbeddingSet, Run, Score
from tests.conftest import make_image_dataset, make_timm_model
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


@pytest.fixture
def inspected_vit():
    model = make_timm_model()
    services.model_inspect(model_id=model.pk)
    model.refresh_from_db()
    return model


def test_inspection_lists_layers_with_shapes(inspected_vit, researcher_client):
    shapes = {layer["name"]: layer["shape"] for layer in inspected_vit.layers}
    assert shapes["pre_logits"] == [64] and "blocks.1" in shapes
    assert inspected_vit.embedding_size == 64 and inspected_vit.parameter_count > 0
    page = researcher_client.get(inspected_vit.get_absolute_url()).content.decode()
    assert "blocks.1" in page


def test_inspection_failure_is_recorded(tmp_path):
    import timm
    import torch

    checkpoint = tmp_path / "w.pth"
    torch.save(timm.create_model("test_vit").state_dict(), checkpoint)
    model = services.model_register(
        name="ckpt",
        source="timm",
        identifier="test_vit",
        weights="checkpoint",
        checkpoint_path=str(checkpoint),
    )
    checkpoint.write_bytes(b"not a checkpoint")
    services.model_inspect(model_id=model.pk)
    model.refresh_from_db()
    assert "could not load" in model.inspection_error and model.layers == []


def test_layer_sweep_scores_every_layer_and_caches_each(inspected_vit, digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    sweep = ["blocks.0", "blocks.1", "pre_logits"]
    run = services.run_create(
        dataset=dataset,
        models=[inspected_vit],
        metrics=[knn_entry(k=3, split="loo")],
        layers={inspected_vit.pk: sweep},
    )
    run_steps(run)
    assert set(Score.objects.filter(run=run).values_list("layer", flat=True)) == set(sweep)
    assert EmbeddingSet.objects.count() == 3
    again = services.run_create(
        dataset=dataset,
        models=[inspected_vit],
        metrics=[knn_entry(k=3, split="loo")],
        layers={inspected_vit.pk: ["blocks.1", "blocks.2"]},
    )
    run_steps(again)
    step = again.steps.get()
    assert step.status == "succeeded" and not step.reused_embeddings  # blocks.2 was new
    assert EmbeddingSet.objects.count() == 4  # blocks.1 came from the cache
    assert set(Score.objects.filter(run=again).values_list("layer", flat=True)) == {
        "blocks.1",
        "blocks.2",
    }


def test_unknown_layer_is_refused_with_close_names(inspected_vit, digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    with pytest.raises(ValidationError, match=r"no layer 'block.1'.*Did you mean: blocks\.1"):
        services.run_create(
            dataset=dataset,
            models=[inspected_vit],
            metrics=[knn_entry(k=3, split="loo")],
            layers={inspected_vit.pk: ["block.1"]},
        )
    assert not Run.objects.exists()


def test_run_form_takes_layers_per_model(inspected_vit, digits_zip_small, researcher_client):
    dataset = make_image_dataset(data=digits_zip_small)
    html = researcher_client.get(
        reverse("evaluation:run_create"), {"dataset": dataset.pk}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert f'name="layers_{inspected_vit.pk}"' in html and "blocks.1" in html
    response = researcher_client.post(
        reverse("evaluation:run_create"),
        {
            "dataset": dataset.pk,
            "models": [inspected_vit.pk],
            f"layers_{inspected_vit.pk}": ["blocks.0", "blocks.1"],
            "metric_knn": "on",
            "knn_k": 3,
            "knn_split": "loo",
        },
    )
    assert response.status_code == 302
    assert Run.objects.get().steps.get().layers == ["blocks.0", "blocks.1"]


def test_precision_is_part_of_the_cache_key_and_shown(digits_zip_small, settings, client):
    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    for precision in ("fp32", "bf16"):
        settings.EXTRACTION_PRECISION = precision
        run = services.run_create(
            dataset=dataset, models=[model], metrics=[knn_entry(k=3, split="loo")]
        )
        run_steps(run)
        assert not run.steps.get().reused_embeddings
    assert sorted(EmbeddingSet.objects.values_list("precision", flat=True)) == ["bf16", "fp32"]
    board = client.get(dataset.targets.get().get_absolute_url()).content.decode()
    assert "bf16" in board and "fp32" in board  # one row each, not one hiding the other
