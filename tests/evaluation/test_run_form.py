"""The New run form as a researcher uses it: only the metrics the chosen dataset offers are
shown and validated, and every problem is stated at the top of the form, including those of
fields the page does not show.

The core path: a dataset made by *Import judgments* (no labels), MiniLM, and "Correlation
with human pair ratings" must start a run."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from evaluation.forms import RunForm
from evaluation.metrics import knn_entry, pair_alignment_entry, probe_entry
from evaluation.models import Dataset, Run
from tests.conftest import make_text_dataset, make_text_model

pytestmark = pytest.mark.django_db

WORD_PAIRS = """a,b,value
cat,dog,7.5
cat,car,1.0
dog,puppy,9.1
car,truck,8.0
puppy,truck,0.8
cat,puppy,6.9
"""
RUN_NEW = reverse("evaluation:run_create")


@pytest.fixture
def imported(researcher_client) -> Dataset:
    """A text dataset made by the Import judgments page from a pairs file: no labels."""
    response = researcher_client.post(
        reverse("evaluation:judgments_import"),
        {
            "name": "word pairs",
            "format": "pairs",
            "file": SimpleUploadedFile("pairs.csv", WORD_PAIRS.encode(), "text/csv"),
            "new_dataset_name": "words",
            "match": "auto",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    dataset = Dataset.objects.get(name="words")
    assert set(dataset.targets.values_list("kind", flat=True)) == {"pairs"}
    return dataset


def top_alert(html: str) -> str:
    """The text of the form's error summary (the first alert inside the form)."""
    form = html[html.index('id="run-form"') :]
    found = re.search(r'<div class="errors" role="alert"[^>]*>(.*?)</div>', form, re.S)
    assert found, "no error summary at the top of the form"
    assert form.index(found.group(0)) < form.index('id="run-fields"')  # above the fields
    return re.sub(r"<[^>]+>", " ", found.group(1))


def test_a_pair_alignment_run_starts_on_a_dataset_made_by_import_judgments(
    researcher_client,
    imported,
    enqueued,
):
    minilm = make_text_model()
    form_page = researcher_client.get(RUN_NEW, {"dataset": imported.pk}).content.decode()
    assert "Correlation with human pair ratings" in form_page
    assert 'name="knn_k"' not in form_page  # no labels: no k-NN, nor its parameters
    response = researcher_client.post(
        RUN_NEW,
        {
            "dataset": imported.pk,
            "models": [minilm.pk],
            "metric_pair_alignment": "on",
            "pair_correlation": "spearman",
        },
    )
    assert response.status_code == 302, top_alert(response.content.decode())
    run = Run.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.metrics == [pair_alignment_entry(correlation="spearman")]
    assert list(run.targets.values_list("kind", flat=True)) == ["pairs"]


def test_parameters_of_unchosen_metrics_are_not_required(
    researcher_client,
    enqueued,
):
    dataset = make_text_dataset()
    minilm = make_text_model()
    response = researcher_client.post(
        RUN_NEW,
        {"dataset": dataset.pk, "models": [minilm.pk], "metric_retrieval_map": "on"},
    )  # k-NN unchecked: its k and split are not sent, and need not be
    assert response.status_code == 302
    assert Run.objects.get().metrics == [probe_entry("retrieval_map")]


def test_a_chosen_metrics_missing_parameter_is_named_at_the_top_and_beside_it(researcher_client):
    dataset = make_text_dataset()
    minilm = make_text_model()
    response = researcher_client.post(
        RUN_NEW, {"dataset": dataset.pk, "models": [minilm.pk], "metric_knn": "on", "knn_k": ""}
    )
    assert response.status_code == 200 and not Run.objects.exists()
    summary = top_alert(response.content.decode())
    assert "k-NN accuracy" in summary and "k: Give k" in summary
    assert response.content.decode().count("Give k, the number of neighbours") == 2


def test_problems_of_fields_the_page_does_not_show_are_stated_at_the_top(
    researcher_client, imported
):
    minilm = make_text_model()
    response = researcher_client.post(  # as a stale page or a script might send it
        RUN_NEW,
        {"dataset": imported.pk, "models": [minilm.pk], "metric_knn": "on", "knn_k": "0"},
    )
    summary = top_alert(response.content.decode())
    assert "k-NN accuracy needs class labels" in summary and "words" in summary
    assert not Run.objects.exists()
    nothing = researcher_client.post(RUN_NEW, {"dataset": imported.pk, "models": [minilm.pk]})
    assert "Choose at least one metric" in top_alert(nothing.content.decode())
    no_model = researcher_client.post(
        RUN_NEW, {"dataset": imported.pk, "metric_pair_alignment": "on"}
    )
    assert "Models: This field is required" in top_alert(no_model.content.decode())


def test_the_form_validates_only_the_metrics_the_dataset_offers(imported):
    minilm = make_text_model()
    data = {"dataset": str(imported.pk), "models": [str(minilm.pk)], "metric_pair_alignment": "on"}
    form = RunForm(data)
    assert form.is_valid(), form.errors
    assert form.metric_entries() == [pair_alignment_entry(correlation="spearman")]
    assert form.offered_kinds == {"pairs"}
    labelled = make_text_dataset()
    form = RunForm({"dataset": str(labelled.pk), "models": [str(minilm.pk)], "metric_knn": "on",
                    "knn_k": "3", "knn_split": "loo"})  # fmt: skip
    assert form.is_valid(), form.errors
    assert form.metric_entries() == [knn_entry(k=3, split="loo")]
