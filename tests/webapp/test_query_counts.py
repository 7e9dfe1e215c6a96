"""List pages issue a bounded number of SQL queries, whatever the number of rows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation import services as studies
from evaluation.models import Target
from tests.conftest import make_text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, RunStepFactory, ScoreFactory

pytestmark = pytest.mark.django_db

PAGES = [
    "evaluation:model_list",
    "evaluation:dataset_list",
    "evaluation:run_list",
    "evaluation:leaderboards",
    "evaluation:leaderboard_overall",
    "annotation:study_list",
]


def grow(count: int, offset: int) -> None:
    """``count`` more of everything the list pages show."""
    for index in range(offset, offset + count):
        dataset = make_text_dataset(name=f"sentences {index}")
        target = Target.objects.get(dataset=dataset)
        model = PretrainedModelFactory(
            name=f"model {index}", identifier="resnet18", default_layer=""
        )
        run = RunFactory(dataset=dataset)
        RunStepFactory(run=run, model=model, total=8, processed=4)
        ScoreFactory(run=run, model=model, target=target, half_width=0.1, n=8)
        studies.study_create(
            dataset=dataset, name=f"study {index}", kind="pairs", items=studies.ItemPlan()
        )


def queries(client, name: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse(name)).status_code == 200
    return len(captured)


@pytest.mark.parametrize("name", PAGES)
def test_list_pages_do_not_issue_a_query_per_row(researcher_client, name):
    grow(2, 0)
    few = queries(researcher_client, name)
    grow(10, 2)
    many = queries(researcher_client, name)
    assert many <= few, f"{name}: {few} queries for 2 rows, {many} for 12"
