"""The run form, the API and `manage.py evaluate` take a metric from one registry, and the
judgment-import form and API from one spec: the same choice gives the same run entry, and the
same field offers the same help and choices everywhere."""

import pytest

from api.serializers import DatasetUploadSerializer, JudgmentsImportSerializer, MetricSerializer
from evaluation.forms import DatasetImportForm, JudgmentImportForm, RunForm
from evaluation.metrics import METRICS, parse_metric
from tests.conftest import make_text_dataset

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("form_data", "api_body", "cli_spec"),
    [
        ({"metric_knn": "on", "knn_k": "7", "knn_split": "holdout"},
         {"name": "knn", "params": {"k": 7, "split": "holdout"}}, "knn(k=7,split=holdout)"),
        ({"metric_few_shot": "on", "few_shot_k": "5"},
         {"name": "few_shot", "params": {"k_shot": 5}}, "few_shot:k_shot=5"),
        ({"metric_retrieval_map": "on"}, {"name": "retrieval_map"}, "retrieval_map"),
    ],
)  # fmt: skip
def test_the_form_the_api_and_the_cli_make_the_same_entry(form_data, api_body, cli_spec):
    dataset = make_text_dataset()
    form = RunForm({"dataset": str(dataset.pk), **form_data})
    form.is_valid()  # no model chosen: only the metric entries are read
    serializer = MetricSerializer(data=api_body)
    assert serializer.is_valid(), serializer.errors
    assert form.metric_entries() == [serializer.validated_data] == [parse_metric(cli_spec)]


def test_every_metric_parameter_is_offered_by_the_api_and_the_cli_help():
    from api.serializers import MetricParamsSerializer
    from evaluation.management.commands.evaluate import Command

    api_fields = MetricParamsSerializer().fields
    help_text = Command().create_parser("manage.py", "evaluate").format_help()
    for info in METRICS.values():
        for parameter in info.parameters:
            assert api_fields[parameter.name].help_text == parameter.help
            assert f"{parameter.name}=" in help_text
            if parameter.field:
                assert parameter.field in RunForm.base_fields


def test_judgment_import_form_and_api_offer_the_same_fields():
    form_fields = JudgmentImportForm.base_fields
    api_fields = JudgmentsImportSerializer().fields
    assert list(form_fields) == list(api_fields)
    for name, field in form_fields.items():
        assert (field.help_text or None) == (api_fields[name].help_text or None), name
        if hasattr(field, "choices") and name in ("format", "match"):
            assert list(field.choices) == list(api_fields[name].choices.items()), name


def test_dataset_import_form_and_api_offer_the_same_fields():
    form_fields = DatasetImportForm.base_fields
    api_fields = DatasetUploadSerializer().fields
    assert list(form_fields) == list(api_fields)
    for name, field in form_fields.items():
        assert (field.help_text or None) == (api_fields[name].help_text or None), name
    api_modalities = list(api_fields["modality"].choices.items())
    # The web form may leave it to the file (a CSV is texts, a zip is media); the API asks.
    assert list(form_fields["modality"].choices) == [("", "Decide from the file"), *api_modalities]
    assert form_fields["text_column"].initial == api_fields["text_column"].default == "text"
    assert api_fields["modality"].required
