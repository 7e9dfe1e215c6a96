"""A human-alignment board of 20 models scored on shared stimulus resamples: Holm-corrected
paired marks against the leader, rank intervals and tie groups on the page and in the CSV,
the differences page; and scores that go stale when a metric's code version changes and are
re-scored in one action from cached embeddings, with no forward pass."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import numpy as np
import pytest
from django.urls import reverse

from evaluation import metrics as metric_registry
from evaluation import services
from evaluation.engine import extraction
from evaluation.engine.metrics.human import aggregate_pairs, pair_alignment
from evaluation.engine.metrics.paired import holm, p_values_against
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.leaderboards import BoardQuery, leaderboard
from evaluation.metrics import pair_alignment_entry
from evaluation.models import Score, Target, resamples_to_bytes
from tests.conftest import make_text_dataset, make_text_model
from tests.evaluation.test_runs import run_steps
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db
N_STIMULI = 30
N_MODELS = 20


def rated_target() -> tuple[Target, np.ndarray]:
    """A text dataset of 30 sentences with ratings of every pair (from a latent space)."""
    rows = [(f"Sentence number {k} about topic {k % 5}.", f"t{k % 5}") for k in range(N_STIMULI)]
    dataset = make_text_dataset("rated", rows)
    latent = np.random.default_rng(0).normal(size=(N_STIMULI, 8))
    i, j = np.triu_indices(N_STIMULI, k=1)
    ratings = np.einsum("ij,ij->i", latent[i], latent[j])
    judgments_create(
        dataset=dataset,
        name="sim",
        kind="pairs",
        rows=[
            JudgmentRow((int(a), int(b)), float(v)) for a, b, v in zip(i, j, ratings, strict=True)
        ],
    )
    return Target.objects.get(dataset=dataset, kind="pairs"), latent


@pytest.fixture
def board_of_20():
    """20 models, each the latent space plus more noise than the last, scored as a run
    would store them (value, interval, resamples, provenance)."""
    target, latent = rated_target()
    i, j = np.triu_indices(N_STIMULI, k=1)
    pairs = aggregate_pairs(i, j, np.einsum("ij,ij->i", latent[i], latent[j]))
    run = RunFactory(dataset=target.dataset)
    rng = np.random.default_rng(1)
    for k in range(N_MODELS):
        model = PretrainedModelFactory(name=f"m{k:02d}")
        result = pair_alignment(latent + (0.3 + 0.05 * k) * rng.normal(size=latent.shape), pairs)
        ScoreFactory(
            run=run, model=model, target=target, metric_key="pair_alignment(correlation=spearman)",
            metric="pair_alignment", value=result.value, ci_low=result.ci_low,
            ci_high=result.ci_high, n=result.n, resamples=resamples_to_bytes(result.resamples),
            resampling=result.resampling,
            provenance={
                "code_version": metric_registry.METRICS["pair_alignment"].version,
                "dataset_hash": target.dataset.content_hash,
                "model_revision": model.revision_key,
            },
        )  # fmt: skip
    return target


def test_leader_marks_are_paired_holm_tests_with_rank_intervals_and_tie_groups(board_of_20):
    board = leaderboard(target=board_of_20, query=BoardQuery())
    assert board.separability == "paired" and board.compared == N_MODELS
    key = board.sort_key
    scores = [Score.objects.get(pk=row.cells[key].score_id) for row in board.rows]
    samples = np.stack([s.resample_values for s in scores])
    values = np.array([s.value for s in scores])
    expected = holm(p_values_against(samples[0], values[0], samples[1:], values[1:]))
    assert [row.p_vs_leader for row in board.rows[1:]] == pytest.approx(list(expected))
    assert [row.separable_from_leader for row in board.rows[1:]] == list(expected < 0.05)
    assert board.rows[0].separable_from_leader is None  # the leader itself
    # Some close models cannot be told from the leader, the noisy tail can.
    assert not board.rows[1].separable_from_leader and board.rows[-1].separable_from_leader
    intervals = [row.rank_interval for row in board.rows]
    assert all(lo <= rank <= hi for rank, (lo, hi) in enumerate(intervals, start=1))
    groups = [row.tie_group for row in board.rows]
    assert groups[0] == 1 and groups == sorted(groups) and 1 < groups[-1] < N_MODELS
    # Group 1 is the leader and the models after it up to the first one it is separated from.
    first_separated = next(k for k, row in enumerate(board.rows) if row.separable_from_leader)
    assert groups.count(1) == first_separated


def test_page_and_csv_show_rank_intervals_tie_groups_and_the_method(client, board_of_20):
    page = client.get(reverse("evaluation:leaderboard", args=[board_of_20.pk]))
    html = page.content.decode()
    assert "95% rank interval" in html and "tie group" in html
    assert "Holm over the 19 comparisons with the leader" in html
    assert "≈ leader" in html and "stale" not in html.split('id="board"')[1].split("</table>")[0]
    rows = list(
        csv.reader(
            io.StringIO(client.get(page.request["PATH_INFO"] + "?format=csv").content.decode())
        )
    )
    header = rows[0]
    for column in ("rank interval low", "rank interval high", "tie group", "p vs leader (Holm)"):
        assert column in header
    first = dict(zip(header, rows[1], strict=True))
    assert first["rank interval low"] == "1" and first["tie group"] == "1"
    recorded = json.loads(first["pair_alignment(correlation=spearman) provenance"])
    assert recorded["code_version"] == 1 and recorded["dataset_hash"]


def test_differences_page_table_heatmap_and_csv(client, board_of_20):
    url = reverse("evaluation:target_differences", args=[board_of_20.pk])
    html = client.get(url, {"top": 5}).content.decode()
    assert 'id="differences-heatmap"' in html and "<svg" in html
    assert html.split('id="differences"')[1].count("<tr><th>") == 1 + 5  # header, a row each
    rows = list(
        csv.reader(io.StringIO(client.get(url, {"top": 5, "format": "csv"}).content.decode()))
    )
    assert len(rows) == 1 + 5 * 4  # every ordered pair
    header = rows[0]
    by_pair = {(r[0], r[2]): dict(zip(header, r, strict=True)) for r in rows[1:]}
    ab = by_pair[("m00", "m01")]
    ba = by_pair[("m01", "m00")]
    assert float(ab["difference (a - b)"]) == pytest.approx(-float(ba["difference (a - b)"]))
    assert ab["p (Holm)"] == ba["p (Holm)"]


def test_a_board_without_resamples_says_it_falls_back_to_overlap(client):
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    for value in (0.9, 0.88, 0.5):
        ScoreFactory(run=run, target=target, value=value)
    board = leaderboard(target=target, query=BoardQuery())
    assert board.separability == "overlap"
    assert [r.separable_from_leader for r in board.rows] == [None, False, True]
    html = client.get(reverse("evaluation:leaderboard", args=[target.pk])).content.decode()
    assert "keep no bootstrap resamples" in html and "95% rank interval" not in html
    differences = client.get(reverse("evaluation:target_differences", args=[target.pk]))
    assert "keep the same bootstrap resamples" in differences.content.decode()


def test_a_leader_without_resamples_keeps_overlap_marks_and_the_rest_are_ranked(
    client, board_of_20
):
    """A stacked model (or a score from before resamples were kept) leads: no paired test
    against it is possible, so the marks stay by overlap, while the others still get rank
    intervals and tie groups among themselves."""
    key = "pair_alignment(correlation=spearman)"
    ScoreFactory(
        run=RunFactory(dataset=board_of_20.dataset), target=board_of_20, metric_key=key,
        metric="pair_alignment", value=0.99, ci_low=0.97, ci_high=0.995,
        model=PretrainedModelFactory(name="stacked leader", source="stacked"),
    )  # fmt: skip
    board = leaderboard(target=board_of_20, query=BoardQuery())
    assert board.rows[0].model_name == "stacked leader" and board.separability == "overlap"
    assert board.compared == N_MODELS and board.rows[0].rank_interval is None
    assert [r.p_vs_leader for r in board.rows] == [None] * (N_MODELS + 1)
    assert board.rows[1].rank_interval[0] == 1 and board.rows[1].tie_group == 1
    assert board.rows[1].separable_from_leader  # 0.906 [0.864, 0.933] is below 0.97
    assert "the leader's score keeps no bootstrap resamples" in board.note
    page = client.get(reverse("evaluation:target_differences", args=[board_of_20.pk]))
    assert "m00" in page.content.decode() and 'id="differences-heatmap"' in page.content.decode()


def test_a_board_where_only_the_leader_has_resamples_keeps_its_overlap_marks():
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    ScoreFactory(
        run=run,
        target=target,
        value=0.9,
        resamples=resamples_to_bytes(np.full(50, 0.9)),
        resampling="r",
    )
    for value in (0.88, 0.5):
        ScoreFactory(run=run, target=target, value=value)
    board = leaderboard(target=target, query=BoardQuery())
    assert board.separability == "overlap" and board.compared == 0
    assert [r.separable_from_leader for r in board.rows] == [None, False, True]


def test_changing_a_metric_version_makes_its_scores_stale_and_one_action_rescores_them(
    researcher_client, monkeypatch
):
    forward_passes: list[int] = []  # one per batch through a model
    real = extraction._embed_chunk

    def counting(adapter, *args, **kwargs):
        embed = adapter.embed
        adapter.embed = lambda *a, **k: forward_passes.append(1) or embed(*a, **k)
        return real(adapter, *args, **kwargs)

    monkeypatch.setattr(extraction, "_embed_chunk", counting)
    target, _ = rated_target()
    model = make_text_model()
    run = services.run_create(
        dataset=target.dataset, models=[model], metrics=[pair_alignment_entry()]
    )
    run_steps(run)
    assert forward_passes  # the counter counts: the first run embeds the sentences
    forward_passes.clear()
    first = Score.objects.get(target=target)
    assert first.provenance["code_version"] == 1 and first.resampling
    assert first.provenance["weights_id"] and first.provenance["judgments"]["version"] == 1
    page = reverse("evaluation:leaderboard", args=[target.pk])
    assert 'id="stale-scores"' not in researcher_client.get(page).content.decode()

    info = metric_registry.METRICS["pair_alignment"]
    monkeypatch.setitem(metric_registry.METRICS, "pair_alignment", replace(info, version=2))
    html = researcher_client.get(page).content.decode()
    assert 'id="stale-scores"' in html and "the metric&#x27;s code is now version 2" in html

    response = researcher_client.post(reverse("evaluation:leaderboard_rescore", args=[target.pk]))
    rescore = target.runs.latest("created_at")
    assert response.status_code == 302 and rescore != run
    run_steps(rescore)
    assert forward_passes == [] and rescore.steps.get().reused_embeddings
    latest = Score.objects.filter(target=target).latest("created_at")
    assert latest.provenance["code_version"] == 2 and latest.value == first.value
    assert 'id="stale-scores"' not in researcher_client.get(page).content.decode()


def test_only_researchers_rescore(client, board_of_20):
    url = reverse("evaluation:leaderboard_rescore", args=[board_of_20.pk])
    before = board_of_20.runs.count()
    response = client.post(url)
    assert response.status_code in (302, 403) and board_of_20.runs.count() == before


def test_api_comparisons_give_rank_intervals_tie_groups_and_every_pair(client, board_of_20):
    url = reverse("api:target-comparisons", args=[board_of_20.pk])
    body = client.get(url, {"top": 4}).json()
    assert body["metric"] == "pair_alignment(correlation=spearman)" and body["reason"] == ""
    assert [m["name"] for m in body["models"]] == ["m00", "m01", "m02", "m03"]
    assert body["models"][0]["rank_interval"][0] == 1 and body["models"][0]["tie_group"] == 1
    assert len(body["pairs"]) == 12 and "Holm" in body["method"]
    pair = body["pairs"][0]
    assert set(pair) == {"a", "b", "difference", "ci", "p", "p_holm", "separated"}
    assert pair["p_holm"] >= pair["p"]
    refused = client.get(url, {"metric": "knn(k=5)"})
    assert refused.status_code == 400 and "No scores on" in refused.content.decode()
    score = client.get(reverse("api:score-list")).json()["results"][0]
    assert score["stale"] == [] and score["provenance"]["code_version"] == 1


def test_rescore_stale_command_lists_and_queues(board_of_20, monkeypatch):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("rescore_stale", "--target", str(board_of_20.pk), "--list", stdout=out)
    assert "0 stale score(s)" in out.getvalue()
    info = metric_registry.METRICS["pair_alignment"]
    monkeypatch.setitem(metric_registry.METRICS, "pair_alignment", replace(info, version=2))
    out = io.StringIO()
    call_command("rescore_stale", "--target", str(board_of_20.pk), "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert len(document["stale"]) == N_MODELS and document["run"] is not None
    assert "code is now version 2" in document["stale"][0]["reasons"][0]
