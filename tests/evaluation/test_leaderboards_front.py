"""The front page (/leaderboards/, where / leads): human-alignment boards first, each with
score, CI, ceiling, fraction of ceiling and chance; label boards after; targets without
scores yet; runs still working; a bounded number of queries and a cache that follows scores."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from evaluation.leaderboards import FRONT_ROWS, chance_of, front_page
from evaluation.models import Target
from tests.api.conftest import pairs_judgments
from tests.conftest import make_text_dataset
from tests.evaluation.test_leaderboards import add_model, add_score
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db
FRONT = reverse("evaluation:leaderboards")
PAIRS = "pair_alignment(correlation=spearman)"


def human_target(name: str) -> Target:
    dataset = make_text_dataset(name=f"sentences {name}")
    return pairs_judgments(dataset, name=name).target


def test_chance_is_known_for_human_metrics_and_left_out_for_labels():
    assert chance_of("odd_one_out").value == pytest.approx(1 / 3)
    assert chance_of("two_afc").value == 0.5
    assert chance_of(PAIRS).value == 0.0
    assert chance_of("knn(k=5,split=loo)") is None  # depends on the classes and their sizes


def test_human_boards_lead_with_ceiling_fraction_and_chance_then_label_boards(client):
    human = human_target("ratings")
    labels = Target.objects.get(dataset=human.dataset, kind="labels")
    run = RunFactory(dataset=human.dataset)
    good, floor = add_model("good-net"), add_model("tfidf", source="baseline")
    add_score(run, floor, human, PAIRS, 0.10, ceiling=0.80)
    add_score(run, good, human, PAIRS, 0.60, half_width=0.05, ceiling=0.80)
    add_score(run, good, labels, "knn(k=5)", 0.90)
    page = client.get(FRONT).content.decode()
    assert page.index('id="human-boards"') < page.index('id="label-boards"')
    board = page[page.index(f"front-board-{human.pk}") : page.index('id="label-boards"')]
    assert board.index("good-net") < board.index("tfidf")
    assert '0.600</span> <span class="ci">[0.550, 0.650]' in board
    assert "0.750" in board  # 0.60 of a 0.80 ceiling
    assert "ceiling 0.800 (split-half reliability of the ratings (Spearman-Brown))" in board
    assert "chance 0.000 (similarities unrelated to the ratings; 0.000 of the ceiling)" in board
    label_board = page[page.index(f"front-board-{labels.pk}") :]
    assert (
        "0.900" in label_board and "Fraction of ceiling" not in label_board.split("</article>")[0]
    )


def test_the_front_page_is_followed_from_the_root(client):
    assert client.get("/", follow=True).redirect_chain[-1][0] == FRONT


def test_a_board_shows_its_best_rows_and_links_the_rest(client):
    human = human_target("many")
    run = RunFactory(dataset=human.dataset)
    for index in range(FRONT_ROWS + 3):
        add_score(run, add_model(f"net-{index:02d}"), human, PAIRS, index / 100, ceiling=0.5)
    front = front_page().human[0]
    assert len(front.rows) == FRONT_ROWS
    assert front.rows[0][1].model_name == f"net-{FRONT_ROWS + 2:02d}"
    page = client.get(FRONT).content.decode()
    assert f"Full board ({FRONT_ROWS + 3} models)" in page


def test_targets_without_scores_wait_with_a_way_to_score_them_for_researchers(
    researcher_client,
):
    waiting = human_target("fresh ratings")
    score_link = f"{reverse('evaluation:run_create')}?dataset={waiting.dataset_id}"
    public = Client().get(FRONT).content.decode()
    assert waiting.name in public and "no scores yet" in public and score_link not in public
    assert score_link in researcher_client.get(FRONT).content.decode()


def test_runs_still_working_are_counted(client):
    dataset = make_text_dataset()
    RunFactory(dataset=dataset, status="queued")
    RunFactory(dataset=dataset, status="running")
    RunFactory(dataset=dataset, status="succeeded")
    assert "2 runs still working" in client.get(FRONT).content.decode()


def test_a_new_score_shows_at_once_and_queries_do_not_grow_with_boards(client):
    def grow(count: int, offset: int) -> None:
        for index in range(offset, offset + count):
            target = human_target(f"ratings {index}")
            run = RunFactory(dataset=target.dataset)
            add_score(run, add_model(f"model {index}"), target, PAIRS, 0.3, ceiling=0.6)
            labels = Target.objects.get(dataset=target.dataset, kind="labels")
            add_score(run, add_model(f"labeller {index}"), labels, "knn(k=5)", 0.7)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(FRONT).status_code == 200
        return len(captured)

    grow(2, 0)
    few = queries()
    grow(10, 2)
    many = queries()
    assert many <= few, f"{few} queries for 2 boards of each kind, {many} for 12"
    assert client.get(FRONT).content.decode().count('class="front-board"') == 24
    cached = queries()
    assert cached < many  # the boards come from the cache until a score changes
    late = human_target("late")
    add_score(RunFactory(dataset=late.dataset), add_model("late-net"), late, PAIRS, 0.4)
    assert f"front-board-{late.pk}" in client.get(FRONT).content.decode()


def test_a_target_s_full_board_says_where_chance_lies(client):
    human = human_target("ratings")
    labels = Target.objects.get(dataset=human.dataset, kind="labels")
    page = client.get(reverse("evaluation:leaderboard", args=[human.pk])).content.decode()
    assert "Chance: correlation with human pair ratings 0.000 (similarities unrelated" in page
    page = client.get(reverse("evaluation:leaderboard", args=[labels.pk])).content.decode()
    assert "Chance:" not in page  # label accuracy's chance depends on the classes
