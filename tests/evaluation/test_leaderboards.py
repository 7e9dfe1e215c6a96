"""Leaderboards: filters, layer choice, sorting, separability from the leader, missing scores,
CSV export, URL state, the across-targets board, and a bounded number of queries."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from evaluation.leaderboards import BoardQuery, leaderboard, overall_board
from evaluation.models import Dataset, PretrainedModel, Run, Target
from tests.api.conftest import pairs_judgments
from tests.conftest import make_text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db
DASH = "\N{EN DASH}"


def add_model(name: str, *, source="timm", params=None, weights="pretrained", modality="text"):
    return PretrainedModelFactory(
        name=name, source=source, weights=weights, modality=modality, parameter_count=params
    )


def add_score(run, model, target, metric, value, *, layer="out", half_width=0.02, ceiling=None):
    return ScoreFactory(
        run=run, model=model, target=target, layer=layer, metric_key=metric, value=value,
        half_width=half_width, ceiling=ceiling,
    )  # fmt: skip


@pytest.fixture
def board_data():
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    big = add_model("big-net", params=300_000_000)
    small = add_model("small-net", params=5_000_000)
    close = add_model("close-net", source="sentence-transformers", params=20_000_000)
    tfidf = add_model("tfidf", source="baseline")
    add_score(run, big, target, "knn(k=5)", 0.90)
    add_score(run, big, target, "knn(k=5)", 0.95, layer="block3")  # a better, deeper layer
    add_score(run, big, target, "retrieval_map", 0.70)
    add_score(run, small, target, "knn(k=5)", 0.60, half_width=0.01)
    add_score(run, close, target, "knn(k=5)", 0.93, half_width=0.05)
    add_score(run, tfidf, target, "knn(k=5)", 0.40)
    return target


def names(board):
    return [(row.model_name, row.layer) for row in board.rows]


def test_best_layer_per_model_sorted_with_separability_and_missing_kept(board_data):
    board = leaderboard(target=board_data, query=BoardQuery())
    assert board.sort_key == "knn(k=5)"
    assert names(board) == [
        ("big-net", "block3"),
        ("close-net", "out"),
        ("small-net", "out"),
        ("tfidf", "out"),
    ]
    big, close, small, _ = board.rows
    assert big.layers_scored == 2
    assert not close.separable_from_leader  # 0.88-0.98 overlaps 0.93-0.97
    assert small.separable_from_leader
    assert "retrieval_map" not in big.cells  # block3 has no retrieval score: missing, not 0
    assert "retrieval_map" not in small.cells


def test_default_and_all_layers(board_data):
    default = leaderboard(target=board_data, query=BoardQuery(layers="default"))
    assert ("big-net", "out") in names(default) and ("big-net", "block3") not in names(default)
    everything = leaderboard(target=board_data, query=BoardQuery(layers="all"))
    assert len(everything.rows) == 5


def test_filters_and_ascending_order(board_data):
    by_source = leaderboard(target=board_data, query=BoardQuery(source="timm"))
    assert {r.model_name for r in by_source.rows} == {"big-net", "small-net"}
    by_size = leaderboard(target=board_data, query=BoardQuery(min_params=10_000_000))
    assert {r.model_name for r in by_size.rows} == {"big-net", "close-net"}  # unknown size out
    by_name = leaderboard(target=board_data, query=BoardQuery(q="NET", max_params=10**7))
    assert names(by_name) == [("small-net", "out")]
    ascending = leaderboard(target=board_data, query=BoardQuery(order="asc"))
    assert ascending.rows[0].model_name == "tfidf"


def test_sorting_by_a_sparse_metric_puts_missing_last(board_data):
    board = leaderboard(target=board_data, query=BoardQuery(sort="retrieval_map", layers="all"))
    assert board.rows[0].model_name == "big-net" and board.rows[0].layer == "out"
    assert all("retrieval_map" not in row.cells for row in board.rows[1:])


def test_url_state_round_trips():
    query = BoardQuery(sort="knn(k=5)", order="asc", layers="all", source="timm", min_params=10)
    assert BoardQuery.from_params(dict(pair.split("=") for pair in query.as_params().split("&")))
    parsed = BoardQuery.from_params({"sort": "knn(k=5)", "order": "asc", "layers": "all",
                                     "source": "timm", "min_params": "10"})  # fmt: skip
    assert parsed == query
    assert BoardQuery.from_params({"layers": "nonsense", "min_params": "x"}) == BoardQuery()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"page": "9" * 400}, {"page": 10**9}),  # past the last page: the last page
        ({"page": "1e309"}, {"page": 10**9}),
        ({"page": "-1"}, {"page": 1}),
        ({"page": "NaN"}, {"page": 1}),
        ({"page": "\N{SUPERSCRIPT TWO}"}, {"page": 1}),  # isdigit(), yet not a number
        ({"page": "\N{ARABIC-INDIC DIGIT THREE}"}, {"page": 1}),  # int() reads it; we do not
        ({"page": "9" * 5000}, {"page": 10**9}),  # past int()'s digit limit
        ({"min_params": "9" * 400}, {"min_params": 10**15}),  # more than any model: none
        ({"max_params": "1e309"}, {"max_params": 10**15}),
        ({"min_params": "-1"}, {"min_params": 0}),
        ({"min_params": "1e9", "max_params": "2_500_000_000"},
         {"min_params": 10**9, "max_params": 2_500_000_000}),
        ({"min_params": "inf"}, {}),
        ({"per_page": "9" * 400}, {}),
        ({"per_page": "25.0"}, {"per_page": 25}),
        ({"q": "a\x00b ", "sort": "\x00knn"}, {"q": "ab", "sort": "knn"}),
        ({"order": "ASC\x00", "layers": "all\x00"}, {}),
    ],
)  # fmt: skip
def test_hostile_query_values_fall_back_or_clamp(params, expected):
    assert BoardQuery.from_params(params) == BoardQuery(**expected)


def test_a_huge_page_number_shows_the_last_page(client, board_data):
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    for params in ({"page": "9" * 400, "per_page": "25"}, {"format": "csv", "page": "9" * 400}):
        assert client.get(url, params).status_code == 200
    page = client.get(url, {"page": "9" * 400, "min_params": "1e6"}).content.decode()
    assert "big-net" in page and "tfidf" not in page  # the filter still applies


def test_page_csv_and_htmx_partial(client, board_data):
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    page = client.get(url, {"source": "timm"}).content.decode()
    assert "big-net" in page and "close-net" not in page and "best of 2 layers" in page
    partial = client.get(url, {"layers": "all"}, headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="board"') and "<html" not in partial
    export = client.get(url, {"format": "csv", "layers": "all"})
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    header, first = rows[0], rows[1]
    assert header[:3] == ["rank", "model", "source"] and len(rows) == 6
    assert first[1] == "big-net" and float(first[header.index("knn(k=5)")]) == 0.95
    small = next(r for r in rows if r[1] == "small-net")
    assert small[header.index("retrieval_map")] == ""  # missing stays empty


def test_pages_continue_the_ranking_and_keep_the_leader_marks(client, board_data):
    run = Run.objects.first()
    for index in range(30):  # all within the CIs of big-net's 0.95: none separable
        add_score(run, add_model(f"tied-{index:02d}"), board_data, "knn(k=5)", 0.94 - index / 1000)
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    first = client.get(url, {"per_page": "25"}).content.decode()
    assert f"Rows 1{DASH}25 of 34" in first and "page 1 of 2" in first and 'rel="next"' in first
    assert "tied-22" in first and "tied-23" not in first  # big-net first, then tied-00...
    second = client.get(url, {"per_page": "25", "page": "2"}).content.decode()
    assert f"Rows 26{DASH}34 of 34" in second and 'rel="prev"' in second and "tied-23" in second
    assert "<td>26</td>" in second and "≈ leader" in second  # ranks and marks carry over
    assert f"Rows 26{DASH}34" in client.get(url, {"per_page": "25", "page": "9"}).content.decode()
    every = client.get(url, {"per_page": "all"}).content.decode()
    assert "34 rows" in every and "tied-29" in every and "page 1 of" not in every
    export = client.get(url, {"per_page": "25", "format": "csv"}).content.decode()
    assert len(export.strip().splitlines()) == 35  # the CSV holds every row, not one page
    query = BoardQuery.from_params({"per_page": "all", "page": "2"})
    assert BoardQuery.from_params(dict(p.split("=") for p in query.as_params().split("&"))) == query
    assert query.cache_key() == BoardQuery().cache_key()  # pages share one cached board


def test_rendered_board_is_cached_per_view_and_dropped_when_scores_change(client, board_data):
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    timm = client.get(url, {"source": "timm"}).content.decode()
    every = client.get(url, {"layers": "all"}).content.decode()
    assert "close-net" not in timm and "close-net" in every  # each view its own board
    assert "late-net" not in client.get(url).content.decode()
    add_score(Run.objects.first(), add_model("late-net"), board_data, "knn(k=5)", 0.99)
    assert "late-net" in client.get(url).content.decode()


def test_leaderboard_queries_do_not_grow_with_rows(
    client, board_data, django_assert_max_num_queries
):
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    run = Run.objects.first()
    for index in range(60):
        add_score(run, add_model(f"extra-{index}"), board_data, "knn(k=5)", 0.5 + index / 1000)
    with django_assert_max_num_queries(8):
        assert client.get(url).status_code == 200
    with django_assert_max_num_queries(4):  # cached: only the version check and the page
        assert client.get(url).status_code == 200


def test_a_cached_page_does_not_load_its_board(client, board_data, monkeypatch):
    url = reverse("evaluation:leaderboard", args=[board_data.pk])
    first = client.get(url, {"source": "timm"}).content.decode()
    board = first[first.index('<div id="board"') :]

    def refuse(**kwargs):
        raise AssertionError("the board was loaded although its page was cached")

    monkeypatch.setattr("evaluation.leaderboards.leaderboard", refuse)
    again = client.get(url, {"source": "timm"}).content.decode()
    assert again[again.index('<div id="board"') :] == board and 'id="board-filters"' in again
    with pytest.raises(AssertionError, match="was loaded"):  # a view not cached yet loads it
        client.get(url, {"source": "baseline"})


def test_overall_board_ranks_within_targets_and_shows_gaps(board_data):
    other = make_text_dataset(name="other sentences")
    other_target = Target.objects.get(dataset=other)
    run = RunFactory(dataset=other)
    small = PretrainedModel.objects.get(name="small-net")
    add_score(run, small, other_target, "knn(k=5)", 0.8)
    labels = overall_board().groups[0]
    assert len(labels.targets) == 2
    rows = [(r.model_name, r.covered, r.ranked) for r in labels.rows]
    assert rows == [  # the other board has one model: shown, not ranked
        ("big-net", 1, 1),
        ("close-net", 1, 1),
        ("small-net", 2, 1),
        ("tfidf", 1, 1),
    ]
    assert labels.rows[0].cells[other_target.pk] is None  # a gap, not a zero
    assert labels.rows[2].cells[other_target.pk].value == 0.8


@pytest.fixture
def planted():
    """A planted ranking: three label boards (one with a tie, one with a single model) and a
    pair-rating board on which the order is reversed."""
    a, b, c = (add_model(name) for name in ("model-a", "model-b", "model-c"))
    boards = {}
    for name, values in (
        ("three", {a: 0.9, b: 0.8, c: 0.7}),  # a first, b middle, c last
        ("tied", {a: 0.6, b: 0.6, c: 0.5}),  # a and b share ranks 1 and 2: 1.5 each
        ("alone", {c: 0.95}),  # one model: first and last at once
    ):
        dataset = make_text_dataset(name=name)
        target = Target.objects.get(dataset=dataset)
        run = RunFactory(dataset=dataset)
        for model, value in values.items():
            add_score(run, model, target, "knn(k=5)", value)
        boards[name] = target
    human = pairs_judgments(Dataset.objects.get(name="three")).target
    run = RunFactory(dataset=human.dataset)
    for model, value in ((a, 0.3), (b, 0.5)):
        add_score(run, model, human, "pair_alignment(correlation=spearman)", value)
    boards["human"] = human
    return boards


def test_overall_board_normalises_ranks_first_is_zero(planted):
    board = overall_board()
    labels, human = board.groups
    assert (labels.kind, human.kind) == ("labels", "human")
    assert {t.name for t in labels.targets} == {"three: labels", "tied: labels", "alone: labels"}
    assert [t.pk for t in human.targets] == [planted["human"].pk]
    rows = {row.model_name: row for row in labels.rows}
    three, tied, alone = (planted[n].pk for n in ("three", "tied", "alone"))
    assert rows["model-a"].ranks == {three: 0.0, tied: 0.25}  # (1.5 - 1) / (3 - 1)
    assert rows["model-b"].ranks == {three: 0.5, tied: 0.25}
    assert rows["model-c"].ranks == {three: 1.0, tied: 1.0}  # "alone" is not ranked...
    assert rows["model-c"].cells[alone].value == 0.95  # ...but its score is shown
    assert [(r.model_name, r.mean_rank, r.ranked, r.covered) for r in labels.rows] == [
        ("model-a", 0.125, 2, 2),
        ("model-b", 0.375, 2, 2),
        ("model-c", 1.0, 2, 3),
    ]
    assert [(r.model_name, r.mean_rank) for r in human.rows] == [("model-b", 0.0), ("model-a", 1.0)]


def test_a_model_alone_on_its_boards_has_no_mean_rank(planted):
    solo = add_model("solo")
    target = Target.objects.get(dataset=make_text_dataset(name="solo set"))
    add_score(RunFactory(dataset=target.dataset), solo, target, "knn", 0.5)
    labels = overall_board().groups[0]
    row = next(r for r in labels.rows if r.model_name == "solo")
    assert (row.mean_rank, row.ranked, row.covered) == (None, 0, 1)
    assert labels.rows[-1] is row  # unranked models come last


def test_overall_page_groups_by_kind_and_says_how_ranks_read(client, planted):
    page = client.get(reverse("evaluation:leaderboard_overall")).content.decode()
    assert page.index('id="overall-labels"') < page.index('id="overall-human"')
    assert "0 = first, 1 = last" in page
    assert "boards with a single model are left out of the mean" in page
    labels = page[page.index('id="overall-labels"') : page.index('id="overall-human"')]
    assert "pair_alignment" not in labels and "model-c" in labels
    assert labels.index("model-a") < labels.index("model-b") < labels.index("model-c")
    assert '<div class="scroll overall">' in page  # wide tables scroll inside the page
    export = client.get(reverse("evaluation:leaderboard_overall"), {"format": "csv"})
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0][:5] == ["group", "model", "mean normalised rank", "ranked on", "scored on"]
    assert rows[1][:5] == ["label accuracy", "model-a", "0.125", "2", "2"]
    human = [row for row in rows if row[0] == "human alignment"]
    assert [(r[1], r[2], r[-1]) for r in human] == [("model-b", "0.0", "0.0"),
                                                     ("model-a", "1.0", "1.0")]  # fmt: skip


def test_model_page_draws_score_against_layer_depth(researcher_client, board_data):
    big = PretrainedModel.objects.get(name="big-net")
    big.layers = [{"name": "stem", "shape": [8]}, {"name": "block3", "shape": [8]},
                  {"name": "out", "shape": [8]}]  # fmt: skip
    big.save()
    page = researcher_client.get(reverse("evaluation:model_detail", args=[big.pk])).content.decode()
    assert 'id="layer-curves"' in page
    assert "block3: 0.950 [0.930, 0.970]" in page and "out: 0.900" in page
    small = PretrainedModel.objects.get(name="small-net")
    page = researcher_client.get(
        reverse("evaluation:model_detail", args=[small.pk])
    ).content.decode()
    assert 'id="layer-curves"' not in page  # one layer is not a curve
