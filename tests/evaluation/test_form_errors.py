"""The catalogue's other forms (register a model, import a dataset or judgments; the study
form shares their template): a parameter of an option not chosen is not required, and every
problem is listed at the top of the form, each linked to its field."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from evaluation.models import PretrainedModel

pytestmark = pytest.mark.django_db


def summary(html: str) -> str:
    """The error summary, checked to come before the form's first field."""
    form = html[html.index('<form method="post"') :]
    found = re.search(r'<div class="errors" role="alert" id="form-errors">(.*?)</div>', form, re.S)
    assert found, "no error summary in the form"
    assert form.index(found.group(0)) < form.index('<div class="field'), "not at the top"
    return found.group(1)


def test_a_pretrained_model_needs_no_seed(researcher_client):
    """The seed only initialises untrained networks: a cleared seed is not an error."""
    response = researcher_client.post(
        reverse("evaluation:model_create"),
        {"name": "vit", "source": "timm", "identifier": "test_vit", "weights": "untrained",
         "seed": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert PretrainedModel.objects.get(name="vit").seed == 0


@pytest.mark.parametrize(
    ("page", "data", "expected"),
    [
        ("evaluation:model_create", {"source": "timm"}, ["Name", "Identifier"]),
        ("evaluation:dataset_create", {"name": "x", "modality": "text", "text_column": ""},
         ["File", "Text column"]),
        ("evaluation:judgments_import", {"format": "pairs"}, ["Name", "File"]),
    ],
)  # fmt: skip
def test_every_problem_is_listed_at_the_top_and_links_to_its_field(
    researcher_client, page, data, expected
):
    html = researcher_client.post(reverse(page), data).content.decode()
    top = summary(html)
    for label in expected:
        assert re.search(rf'<a href="#id_\w+">{label}</a>', top), (label, top)
