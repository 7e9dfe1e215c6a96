"""A study pilot's simulated target (judgments made by simulated participants, not people):
one definition of what a run scores by default (every target but the simulated), the same
for the run form, the API and ``manage.py evaluate``; each of them can name targets, a
simulated one included; and wherever a target is listed it says it is simulated."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.http import QueryDict
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evaluation import selectors
from evaluation.forms import RunForm
from evaluation.imports.stimuli import dataset_import_texts
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.leaderboards import _every_score_stamp
from evaluation.management.commands.evaluate import parse_metrics
from evaluation.metrics import knn_entry, pair_alignment_entry
from evaluation.models import HumanJudgments, Run, Target
from evaluation.services.runs import run_create
from tests.conftest import make_text_dataset, make_text_model
from tests.factories import RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db

RUN_NEW = reverse("evaluation:run_create")
PAIRS = [((0, 1), 6.0), ((0, 2), 5.0), ((1, 2), 4.0), ((4, 5), 7.0), ((0, 4), 1.0)]


def pilot_pairs(dataset, name: str = "pilot") -> Target:
    """A pairs target whose judgments a pilot's simulated participants made."""
    judgments = judgments_create(
        dataset=dataset,
        name=name,
        kind="pairs",
        rows=[JudgmentRow(stimuli, value=value, participant="bot") for stimuli, value in PAIRS],
        scale_min=0,
        scale_max=7,
        simulated=True,
    )
    return judgments.target


@pytest.fixture
def catalogue():
    """A text dataset with its labels and a simulated pairs target, another dataset, MiniLM."""
    dataset = make_text_dataset()
    labels = Target.objects.get(dataset=dataset, kind="labels")
    simulated = pilot_pairs(dataset)
    other = make_text_dataset(name="other sentences")
    return {
        "dataset": dataset,
        "labels": labels,
        "simulated": simulated,
        "foreign": Target.objects.get(dataset=other, kind="labels"),
        "model": make_text_model(),
    }


def test_the_default_targets_leave_the_simulated_out(catalogue):
    dataset = catalogue["dataset"]
    assert list(selectors.targets_scored_by_default(dataset=dataset)) == [catalogue["labels"]]
    assert set(selectors.targets_of(dataset=dataset)) == {
        catalogue["labels"],
        catalogue["simulated"],
    }


def test_a_default_run_scores_the_labels_only_and_its_default_metrics_fit(catalogue, enqueued):
    dataset = catalogue["dataset"]
    metrics = parse_metrics([], dataset)
    assert metrics == [knn_entry(k=5, split="loo")]
    run = run_create(dataset=dataset, models=[catalogue["model"]], metrics=metrics)
    assert list(run.targets.all()) == [catalogue["labels"]]
    named = parse_metrics([], dataset, [catalogue["simulated"]])
    assert named == [pair_alignment_entry()]


def evaluate(*args: str) -> str:
    out = io.StringIO()
    call_command("evaluate", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_evaluate_without_metric_scores_the_default_targets_and_target_names_others(
    catalogue, enqueued
):
    dataset, simulated = catalogue["dataset"], catalogue["simulated"]
    evaluate("--dataset", str(dataset.pk), "--model", "minilm")
    run = Run.objects.get()
    assert run.metrics == [knn_entry(k=5, split="loo")]
    assert list(run.targets.all()) == [catalogue["labels"]]
    evaluate("--dataset", str(dataset.pk), "--model", "minilm", "--target", str(simulated.pk))
    named = Run.objects.latest("pk")
    assert named.metrics == [pair_alignment_entry()]
    assert list(named.targets.all()) == [simulated]
    evaluate(
        "--dataset",
        str(dataset.pk),
        "--model",
        "minilm",
        "--target",
        str(simulated.pk),
        "--target",
        str(catalogue["labels"].pk),
    )
    both = Run.objects.latest("pk")
    assert set(both.targets.all()) == {simulated, catalogue["labels"]}
    assert both.metrics == [knn_entry(k=5, split="loo"), pair_alignment_entry()]


def test_evaluate_refuses_a_target_of_another_dataset(catalogue, enqueued):
    foreign = catalogue["foreign"]
    with pytest.raises(
        CommandError, match=f"Target {foreign.pk} .* not of the run's dataset sentences"
    ):
        evaluate(
            "--dataset",
            str(catalogue["dataset"].pk),
            "--model",
            "minilm",
            "--target",
            str(foreign.pk),
        )
    with pytest.raises(CommandError, match="No target with id 999999"):
        evaluate(
            "--dataset", str(catalogue["dataset"].pk), "--model", "minilm", "--target", "999999"
        )
    assert not Run.objects.exists()


def test_evaluate_on_a_dataset_with_only_a_simulated_target_says_to_name_it(enqueued):
    words = "text\none\ntwo\nthree\nfour\nfive\nsix\n"
    dataset = dataset_import_texts(name="words", upload=io.BytesIO(words.encode()), label_column="")
    make_text_model()
    pilot_pairs(dataset)
    assert list(dataset.targets.values_list("kind", flat=True)) == ["pairs"]
    with pytest.raises(CommandError, match="only a study pilot's simulated ones: name one"):
        evaluate("--dataset", str(dataset.pk), "--model", "minilm")


def test_run_form_offers_the_simulated_kind_only_when_its_target_is_ticked(catalogue):
    dataset, labels, simulated = catalogue["dataset"], catalogue["labels"], catalogue["simulated"]
    assert RunForm(initial={"dataset": dataset.pk}).offered_kinds == {"labels"}
    assert RunForm(initial={"dataset": dataset.pk, "targets": [simulated.pk]}).offered_kinds == {
        "pairs"
    }
    both = QueryDict(mutable=True)
    both.update({"dataset": str(dataset.pk)})
    both.setlist("targets", [str(labels.pk), str(simulated.pk)])
    assert RunForm(both).offered_kinds == {"labels", "pairs"}
    assert RunForm({"dataset": str(dataset.pk)}).offered_kinds == {"labels"}  # a plain dict


def test_run_form_lists_the_targets_with_the_simulated_labelled(researcher_client, catalogue):
    dataset, labels, simulated = catalogue["dataset"], catalogue["labels"], catalogue["simulated"]
    page = researcher_client.get(RUN_NEW, {"dataset": dataset.pk}).content.decode()
    assert f'value="{labels.pk}" id="id_targets_{labels.pk}" checked' in page
    assert f'value="{simulated.pk}" id="id_targets_{simulated.pk}" >' in page
    assert "simulated (pilot)</span>" in page
    assert "Correlation with human pair ratings" not in page
    # The leaderboard's (or an aggregated pilot's) link ticks that target, and its metrics.
    linked = researcher_client.get(RUN_NEW, {"target": simulated.pk})
    html = linked.content.decode()
    assert f'value="{simulated.pk}" id="id_targets_{simulated.pk}" checked' in html
    assert f'value="{labels.pk}" id="id_targets_{labels.pk}" >' in html
    assert "Correlation with human pair ratings" in html
    assert linked.context["form"]["metric_pair_alignment"].initial is True
    # Without JavaScript: the page's own link shows the metrics of the targets ticked.
    shown = researcher_client.get(
        RUN_NEW, {"dataset": dataset.pk, "targets": [str(simulated.pk)]}
    ).content.decode()
    assert "Correlation with human pair ratings" in shown
    assert "Show metrics for these targets" in shown


def test_run_form_scores_a_ticked_simulated_target(researcher_client, catalogue, enqueued):
    dataset, simulated = catalogue["dataset"], catalogue["simulated"]
    post = {
        "dataset": dataset.pk,
        "models": [catalogue["model"].pk],
        "metric_pair_alignment": "on",
        "pair_correlation": "spearman",
    }
    refused = researcher_client.post(RUN_NEW, post)
    assert refused.status_code == 200
    assert "has only a pilot&#x27;s simulated one" in refused.content.decode()
    assert not Run.objects.exists()
    response = researcher_client.post(RUN_NEW, {**post, "targets": [simulated.pk]})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(Run.objects.get().targets.all()) == [simulated]


def test_run_form_refuses_a_target_of_another_dataset(researcher_client, catalogue, enqueued):
    response = researcher_client.post(
        RUN_NEW,
        {
            "dataset": catalogue["dataset"].pk,
            "models": [catalogue["model"].pk],
            "metric_knn": "on",
            "knn_k": 5,
            "knn_split": "loo",
            "targets": [catalogue["foreign"].pk],
        },
    )
    assert response.status_code == 200
    assert "Choose targets of the chosen dataset" in response.content.decode()
    assert not Run.objects.exists()


@pytest.fixture
def api(researcher) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=researcher)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def test_api_run_names_targets_and_refuses_another_dataset_s(api, catalogue, enqueued):
    dataset, simulated = catalogue["dataset"], catalogue["simulated"]
    body = {
        "dataset": dataset.pk,
        "models": [catalogue["model"].pk],
        "metrics": [{"name": "pair_alignment"}],
    }
    refused = api.post("/api/runs/", body, format="json")
    assert refused.status_code == 400, refused.json()
    assert not Run.objects.exists()
    created = api.post("/api/runs/", {**body, "targets": [simulated.pk]}, format="json")
    assert created.status_code == 201, created.json()
    assert list(Run.objects.get().targets.all()) == [simulated]
    foreign = catalogue["foreign"]
    other = api.post("/api/runs/", {**body, "targets": [foreign.pk]}, format="json")
    assert other.status_code == 400
    assert f"Target {foreign.pk} ({foreign.name}) is a target of other sentences" in str(
        other.json()
    )
    assert Run.objects.count() == 1


def test_api_summaries_say_which_target_is_simulated(client, catalogue, api):
    dataset, labels, simulated = catalogue["dataset"], catalogue["labels"], catalogue["simulated"]
    run = RunFactory(dataset=dataset)
    ScoreFactory(run=run, model=catalogue["model"], target=simulated, metric_key="pair_alignment")
    ScoreFactory(run=run, model=catalogue["model"], target=labels)
    scores = client.get("/api/scores/").json()["results"]
    assert {s["target"]["id"]: s["target"]["simulated"] for s in scores} == {
        simulated.pk: True,
        labels.pk: False,
    }
    targets = api.get(f"/api/datasets/{dataset.pk}/").json()["targets"]
    assert {t["id"]: t["simulated"] for t in targets} == {simulated.pk: True, labels.pk: False}
    listed = api.get("/api/datasets/").json()["results"]
    mine = next(d for d in listed if d["id"] == dataset.pk)
    assert {t["id"]: t["simulated"] for t in mine["targets"]} == {
        simulated.pk: True,
        labels.pk: False,
    }


def test_pages_listing_targets_label_the_simulated(researcher_client, catalogue):
    dataset, simulated = catalogue["dataset"], catalogue["simulated"]
    run = RunFactory(dataset=dataset)
    ScoreFactory(run=run, model=catalogue["model"], target=simulated, metric_key="pair_alignment")
    compare = researcher_client.get(reverse("evaluation:compare")).content.decode()
    assert f"{simulated.name} · simulated (pilot)</option>" in compare
    assert f"{catalogue['labels'].name} · simulated" not in compare
    page = researcher_client.get(dataset.get_absolute_url()).content.decode()
    assert page.count("simulated (pilot)</span>") == 1
    model_page = researcher_client.get(catalogue["model"].get_absolute_url()).content.decode()
    assert "simulated (pilot)</span>" in model_page


def test_the_boards_stamp_changes_when_judgments_become_simulated(catalogue):
    people = judgments_create(
        dataset=catalogue["dataset"],
        name="people",
        kind="pairs",
        rows=[JudgmentRow(stimuli, value=value, participant="p") for stimuli, value in PAIRS],
        scale_min=0,
        scale_max=7,
    )
    before = _every_score_stamp()
    assert _every_score_stamp() == before
    HumanJudgments.objects.filter(pk=people.pk).update(simulated=True)
    assert _every_score_stamp() != before
