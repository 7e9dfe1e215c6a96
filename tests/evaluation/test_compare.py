"""The compare page, from embeddings that real runs cached: heatmaps in one stimulus order,
the human scatter, CKA of A's layers against B's, neighbours and disagreements; and a
model without embeddings is named, not silently dropped."""

from __future__ import annotations

from html import escape

import numpy as np
import pytest
from django.urls import reverse
from scipy.stats import spearmanr

from evaluation import compare, services
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.metrics import knn_entry
from tests.conftest import make_text_dataset, make_text_model
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(enqueued):
    dataset = make_text_dataset()
    rows = [
        JudgmentRow(stimuli=(a, b), value=float(7 - abs(a - b)))
        for a in range(8)
        for b in range(a + 1, 8)
    ]
    judgments = judgments_create(dataset=dataset, name="toy", kind="pairs", rows=rows)
    tfidf = services.model_register(name="tfidf", source="baseline", identifier="tfidf")
    small = make_text_model()
    run = services.run_create(
        dataset=dataset, models=[tfidf, small], metrics=[knn_entry(k=1, split="loo")]
    )
    run_steps(run)
    return judgments.target, tfidf, small


def test_comparison_uses_the_cached_embeddings(scored):
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={})
    assert [side.model for side in result.sides] == [tfidf, small] and not result.missing
    assert len(result.heatmaps) == 2
    # The scatter's Spearman is the metric's own quantity: model cosine vs mean rating.
    side, rho, _ = result.scatters[1]
    x = np.asarray(side.embedding_set.load(), dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(8, k=1)
    expected = spearmanr(np.einsum("ij,ij->i", unit[i], unit[j]), 7 - np.abs(i - j)).statistic
    assert rho == pytest.approx(expected)
    assert not result.problems
    # RSA between the two models equals scipy's Spearman of their condensed RDMs.
    vectors = [np.asarray(s.embedding_set.load(), dtype=np.float64) for s in result.sides]
    units = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vectors]
    rdms = [1 - (u @ u.T)[np.triu_indices(8, k=1)] for u in units]
    expected_rsa = spearmanr(rdms[0], rdms[1]).statistic
    assert f"tfidf x minilm: {expected_rsa:.3f}" in result.rsa.svg
    assert result.cka is not None and "Linear CKA" in result.cka.svg
    assert len(result.neighbours[0][1]) == 5
    assert result.stimulus not in [s for s, _ in result.neighbours[0][1]]
    assert len(result.disagreements.i) == 28  # every pair of the 8 stimuli
    gaps = [abs(row["values"][2]) for row in result.disagreements.rows("-size")]
    assert gaps == sorted(gaps, reverse=True)


def test_page_names_a_model_without_embeddings(researcher_client, scored):
    target, tfidf, _ = scored
    fresh = services.model_register(name="pixels", source="baseline", identifier="tfidf-3")
    page = researcher_client.get(
        reverse("evaluation:compare"),
        {"target": target.pk, "models": [tfidf.pk, fresh.pk], "order": "cluster"},
    ).content.decode()
    assert "pixels has no cached embeddings" in page


def test_page_renders_every_section(researcher_client, scored):
    target, tfidf, small = scored
    page = researcher_client.get(
        reverse("evaluation:compare"),
        {"target": target.pk, "models": [tfidf.pk, small.pk], "sync": "1"},
    ).content.decode()
    for section in ('id="heatmaps"', 'id="scatters"', 'id="rsa"', 'id="cka"', 'id="neighbours"',
                    'id="disagreements"'):  # fmt: skip
        assert section in page


def test_outsiders_cannot_compare(client, outsider, scored):
    client.force_login(outsider)
    assert client.get(reverse("evaluation:compare")).status_code == 403


def test_a_section_that_cannot_be_computed_is_named_and_the_rest_still_shows(scored, monkeypatch):
    from evaluation.engine.errors import MetricError

    def zero_rows(*args, **kwargs):
        raise MetricError("Row 2 of x is all zeros, so its cosine similarity is undefined.")

    monkeypatch.setitem(compare.SECTION_COMPUTE, "matrices", zero_rows)
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={})
    assert result.problems == ["Row 2 of x is all zeros, so its cosine similarity is undefined."]
    assert result.scatters and result.neighbours and result.cka


# --- Issue 23: people beside the models, the measure, sections, sortable pair tables ---------
def _model_cosines(side, i, j):
    x = np.asarray(side.embedding_set.load(), dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", unit[i], unit[j])


@pytest.mark.parametrize("measure", ["spearman", "pearson", "rho_a", "kendall_tau_a"])
def test_the_measure_is_the_engines_and_scipys(scored, measure):
    """Each measure against people equals scipy's (Spearman, Pearson; on these untied ratings
    rho-a is Spearman's rho and tau-a Kendall's tau) and the engine's RSA of the same
    28 values (8 stimuli: a full triangle, which rsa() accepts)."""
    from scipy.stats import kendalltau, pearsonr

    from evaluation.engine.metrics.rsa import rsa

    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={}, measure=measure)
    side, value, svg = result.scatters[1]
    i, j = np.triu_indices(8, k=1)
    model, human = _model_cosines(side, i, j), 7.0 - np.abs(i - j)
    assert value == pytest.approx(rsa(model, human, method=measure), abs=1e-12)
    scipy_value = {
        "spearman": spearmanr(model, human).statistic,
        "pearson": pearsonr(model, human).statistic,
        # Human ratings 1..7 are tied; rho-a and tau-a do not correct for ties, so they
        # fall below the tie-corrected scipy values.
        "rho_a": None,
        "kendall_tau_a": None,
    }[measure]
    if scipy_value is not None:
        assert value == pytest.approx(scipy_value, abs=1e-12)
    else:
        corrected = (spearmanr if measure == "rho_a" else kendalltau)(model, human).statistic
        assert abs(value) < abs(corrected)
    assert f"{compare.MEASURES[measure]} {value:.3f}" in svg.svg


def test_correlation_refuses_what_it_cannot_compare():
    from evaluation.engine.errors import MetricError

    with pytest.raises(MetricError, match="constant"):
        compare.correlation(np.ones(5), np.arange(5.0), "spearman")
    assert compare.correlation(np.ones(5), np.arange(5.0), "rho_a") == 0.0
    with pytest.raises(MetricError, match="Unknown measure"):
        compare.correlation(np.arange(5.0), np.arange(5.0), "cosine")


def test_people_matrix_and_residuals_share_the_models_order(scored):
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={}, order_by="cluster")
    assert result.human and result.matrix_stimuli == 8 and result.matrix_judged == 28
    human_svg = result.human_heatmap.svg
    assert "People: mean rating of 28 judged pairs" in human_svg
    # People's rating of a pair sits in the cell of the same pair as the models' similarity.
    names = [
        escape(f"{s.name} [{s.label}]" if s.label else s.name)
        for s in target.dataset.stimuli.order_by("order")
    ]
    assert f"{names[0]} x {names[1]}: 6.000" in human_svg
    assert f"{names[0]} x {names[7]}: 0.000" in human_svg
    # The unjudged diagonal is one grey rectangle under the grid, not 8 cells of their own.
    assert human_svg.count("<title>not judged</title>") == 1
    assert ": -</title>" not in human_svg
    assert human_svg.count("<rect ") == 1 + 56  # the background, 56 judged cells
    assert len(result.residuals) == 2
    side, figure = result.residuals[1]
    svg = figure.svg
    i, j = np.triu_indices(8, k=1)
    from scipy.stats import rankdata

    model, human = _model_cosines(side, i, j), 7.0 - np.abs(i - j)
    residual = (rankdata(model) - 1) / 27 - (rankdata(human) - 1) / 27
    k = 5  # a pair: (0, 6)
    assert f"{names[i[k]]} x {names[j[k]]}: {residual[k]:.3f}" in svg
    assert "minus people (fractional ranks)" in svg
    # Pearson compares values, so its residuals are z-scores.
    pearson = compare.compare(target=target, models=[tfidf, small], layers={}, measure="pearson")
    z = (model - model.mean()) / model.std() - (human - human.mean()) / human.std()
    assert f"{names[i[k]]} x {names[j[k]]}: {z[k]:.3f}" in pearson.residuals[1][1].svg


def test_matrix_stimuli_are_the_most_judged_among_themselves():
    from evaluation.engine.metrics.human import aggregate_pairs

    # Stimuli 3, 5, 7, 9 are judged against each other (6 pairs); 0-2 form a chain.
    clique = [(3, 5), (3, 7), (3, 9), (5, 7), (5, 9), (7, 9)]
    chain = [(0, 1), (1, 2), (2, 11)]
    a, b = zip(*(clique + chain), strict=True)
    pairs = aggregate_pairs(np.array(a), np.array(b), np.ones(len(a)))
    assert list(compare.matrix_stimuli(12, pairs, size=4)) == [3, 5, 7, 9]
    # Fewer judged stimuli than the size: every judged one.
    assert list(compare.matrix_stimuli(12, pairs, size=20)) == [0, 1, 2, 3, 5, 7, 9, 11]
    assert len(compare.matrix_stimuli(500, None, size=120)) == 120


def test_pair_table_sorts_by_any_column():
    from types import SimpleNamespace

    stimuli = [SimpleNamespace(name=n) for n in ["b", "a", "c"]]
    table = compare.PairTable(
        key="t",
        columns=[("model", "Model"), ("residual", "Residual")],
        stimuli=stimuli,  # type: ignore[arg-type]
        i=np.array([0, 1, 0]),
        j=np.array([1, 2, 2]),
        values={"model": np.array([0.5, 0.1, 0.9]), "residual": np.array([-0.7, 0.2, 0.1])},
    )
    pair_names = lambda sort: [(r["a"].name, r["b"].name) for r in table.rows(sort)]  # noqa: E731
    assert pair_names("-size") == [("b", "a"), ("a", "c"), ("b", "c")]  # |residual|
    assert pair_names("model") == [("a", "c"), ("b", "a"), ("b", "c")]
    assert pair_names("-model") == [("b", "c"), ("b", "a"), ("a", "c")]
    assert pair_names("residual") == [("b", "a"), ("b", "c"), ("a", "c")]
    assert pair_names("pair") == [("a", "c"), ("b", "a"), ("b", "c")]
    assert pair_names("nonsense") == pair_names("-size")


def test_page_is_a_form_and_placeholders_that_load_each_section(researcher_client, scored):
    target, tfidf, small = scored
    query = {"target": target.pk, "models": [tfidf.pk, small.pk], "measure": "rho_a"}
    page = researcher_client.get(reverse("evaluation:compare"), query).content.decode()
    assert 'id="heatmaps"' not in page  # nothing computed for the page itself
    for section in compare.SECTIONS:
        assert f'id="section-{section}"' in page
        assert f"section={section}" in page
    assert page.count('aria-busy="true"') == 4
    assert "sync=1" in page  # the way in without JavaScript
    assert '<option value="rho_a" selected>rho-a (recommended with ties)</option>' in page
    assert "prefer rho-a" in page  # the recommendation, as the control's help
    section = researcher_client.get(
        reverse("evaluation:compare_section"), {**query, "section": "matrices"}
    ).content.decode()
    assert section.startswith('<section id="section-matrices">')
    assert 'id="human-matrix"' in section and 'id="residuals"' in section
    assert "<html" not in section
    people = researcher_client.get(
        reverse("evaluation:compare_section"), {**query, "section": "people"}
    ).content.decode()
    assert 'id="scatters"' in people and f'id="pairs-people-{small.pk}"' in people
    assert "rho-a" in people


def test_a_section_is_computed_once_then_read_from_the_cache(scored, monkeypatch):
    target, tfidf, small = scored
    calls = []
    real = compare.SECTION_COMPUTE["models"]
    monkeypatch.setitem(
        compare.SECTION_COMPUTE, "models", lambda r, i: (calls.append(1), real(r, i))
    )
    for _ in range(2):
        result = compare.compare(
            target=target, models=[tfidf, small], layers={}, sections=("models",)
        )
        assert result.rsa is not None and result.cka is not None
    assert len(calls) == 1
    compare.compare(
        target=target, models=[tfidf, small], layers={}, sections=("models",), measure="rho_a"
    )
    assert len(calls) == 2  # another measure, another key


def test_pair_table_csv_has_every_judged_pair_in_the_pages_order(researcher_client, scored):
    import csv
    import io

    target, tfidf, small = scored
    query = {"target": target.pk, "models": [tfidf.pk, small.pk]}
    response = researcher_client.get(
        reverse("evaluation:compare_pairs_csv"),
        {**query, "table": f"people-{small.pk}", f"sort_people-{small.pk}": "-human"},
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert f'filename="compare-people-{small.pk}.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["stimulus_a", "stimulus_b", "model", "human", "model_scaled",
                       "human_scaled", "residual"]  # fmt: skip
    assert len(rows) == 1 + 28
    human = [float(r[3]) for r in rows[1:]]
    assert human == sorted(human, reverse=True) and human[0] == 6.0
    # The model column is the model's cosine of that pair.
    names = {s.name: s.order for s in target.dataset.stimuli.all()}
    side = compare.compare(target=target, models=[tfidf, small], layers={}, sections=()).sides[1]
    a, b = names[rows[1][0]], names[rows[1][1]]
    assert float(rows[1][2]) == pytest.approx(
        _model_cosines(side, np.array([a]), np.array([b]))[0], abs=1e-5
    )
    models = researcher_client.get(
        reverse("evaluation:compare_pairs_csv"), {**query, "table": "models"}
    )
    assert len(models.content.decode().splitlines()) == 1 + 28
    bad = researcher_client.get(reverse("evaluation:compare_pairs_csv"), {**query, "table": "x"})
    assert bad.status_code == 400 and b"No such pair table" in bad.content


def test_sort_links_work_without_javascript(researcher_client, scored):
    target, tfidf, small = scored
    key = f"sort_people-{small.pk}"
    page = researcher_client.get(
        reverse("evaluation:compare"),
        {"target": target.pk, "models": [tfidf.pk, small.pk], "sync": "1", key: "-human"},
    ).content.decode()
    assert 'aria-sort="descending"' in page
    assert f"{key}=human" in page  # the sorted column's link reverses it
    assert "sync=1" in page.split(f'id="pairs-people-{small.pk}"')[1].split("</table>")[0]


def test_section_endpoint_refuses_an_incomplete_choice(researcher_client, client, outsider, scored):
    target, tfidf, _ = scored
    url = reverse("evaluation:compare_section")
    response = researcher_client.get(url, {"target": target.pk, "models": [tfidf.pk]})
    assert response.status_code == 400 and b"two to four models" in response.content
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    assert client.get(reverse("evaluation:compare_pairs_csv")).status_code == 403


def test_each_compare_figure_downloads_as_svg_png_and_its_data(researcher_client, scored):
    """The page's download links rebuild its figures (evaluation.figures): the people's
    matrix's CSV is its judged pairs, a residual's CSV is model minus people."""
    import csv
    import io
    import re

    target, tfidf, small = scored
    query = {"target": target.pk, "models": [tfidf.pk, small.pk], "measure": "pearson"}
    html = ""
    for section in ("matrices", "people", "models"):
        html += researcher_client.get(
            reverse("evaluation:compare_section"), {**query, "section": section}
        ).content.decode()
    links = {}  # kind, or kind-<model id>: the figure's CSV link
    for url in re.findall(r'href="(/figures/compare-[a-z]+\.csv\?[^"]+)"', html):
        url = url.replace("&amp;", "&")
        kind = re.search(r"/figures/(compare-[a-z]+)\.csv", url)[1]
        model = re.search(r"[?&]model=(\d+)", url)
        links[kind + (f"-{model[1]}" if model else "")] = url
    kinds = {name.split("-")[1] for name in links}
    assert kinds == {"similarity", "people", "residual", "scatter", "rsa", "cka"}
    people = researcher_client.get(links["compare-people"])
    rows = list(csv.reader(io.StringIO(people.content.decode())))
    assert rows[0][-2:] == ["mean human rating", "judgments"] and len(rows) == 1 + 28
    residual = researcher_client.get(links[f"compare-residual-{small.pk}"])
    rows = list(csv.DictReader(io.StringIO(residual.content.decode())))
    assert len(rows) == 28 and "model (z-scores)" in rows[0]
    assert all(
        float(r["model minus people"])
        == pytest.approx(float(r["model (z-scores)"]) - float(r["people (z-scores)"]))
        for r in rows
    )
    svg = researcher_client.get(links["compare-rsa"].replace(".csv?", ".svg?"))
    assert svg["Content-Type"] == "image/svg+xml" and b"RSA (Pearson)" in svg.content
    png = researcher_client.get(links[f"compare-similarity-{small.pk}"].replace(".csv?", ".png?"))
    assert png["Content-Type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_compare_figure_that_cannot_be_made_says_why(researcher_client, scored):
    target, tfidf, small = scored
    url = reverse("evaluation:figure_download", args=["compare-scatter", "svg"])
    one = researcher_client.get(url, {"target": target.pk, "models": [tfidf.pk]})
    assert one.status_code == 400 and b"two to four times" in one.content
    other = researcher_client.get(
        url, {"target": target.pk, "models": [tfidf.pk, small.pk], "model": 999999}
    )
    assert other.status_code == 400
    assert b"model 999999 is not among the models compared" in other.content


def test_an_undefined_correlation_says_why_in_the_pages_terms():
    from types import SimpleNamespace

    from evaluation.engine.errors import MetricError

    side = SimpleNamespace(model=SimpleNamespace(name="TF-IDF"))
    constant = compare._undefined(side, np.zeros(5), np.arange(5.0), "spearman", MetricError("x"))
    assert constant == (
        "TF-IDF gives every judged pair the same similarity (0.000), so its Spearman "
        "correlation with people is undefined; rho-a and tau-a score it 0."
    )
    flat = compare._undefined(side, np.arange(5.0), np.ones(5), "pearson", MetricError("x"))
    assert flat.startswith("Every judged pair has the same mean rating")


def test_a_target_without_ratings_shows_the_models_alone(researcher_client, scored):
    from evaluation.models import Target

    _, tfidf, small = scored
    labels = Target.objects.get(dataset=scored[0].dataset, kind="labels")
    query = {"target": labels.pk, "models": [tfidf.pk, small.pk]}
    page = researcher_client.get(reverse("evaluation:compare"), query).content.decode()
    assert 'id="section-matrices"' in page and 'id="section-people"' not in page
    matrices = researcher_client.get(
        reverse("evaluation:compare_section"), {**query, "section": "matrices"}
    ).content.decode()
    assert matrices.count('class="figure"') == 2 and 'id="human-matrix"' not in matrices
    people = researcher_client.get(
        reverse("evaluation:compare_section"), {**query, "section": "people"}
    ).content.decode()
    assert "is not a target of pair ratings" in people and "<svg" not in people


@pytest.mark.parametrize("measure", ["spearman", "pearson", "kendall_tau_a"])
def test_the_correlation_with_people_carries_the_leaderboards_interval(scored, measure):
    """Spearman and Pearson: the very interval the engine's pair_alignment (a run's score)
    gives, same resamples; tau-a: a stimulus bootstrap interval around the value."""
    from evaluation.engine.metrics.human import pair_alignment
    from evaluation.judgments import target_data

    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={}, measure=measure)
    side, value, figure = result.scatters[1]
    low, high = result.intervals[small.pk]
    assert low < value < high
    assert f"{value:.3f} [{low:.3f}, {high:.3f}]" in figure.svg
    if measure != "kendall_tau_a":
        x = np.asarray(side.embedding_set.load(), dtype=np.float64)
        score = pair_alignment(x, target_data(target).ratings, correlation=measure, n_boot=1000)
        assert (low, high) == pytest.approx((score.ci_low, score.ci_high), abs=1e-12)
        assert value == pytest.approx(score.value, abs=1e-12)


# --- Review of issue 23 -------------------------------------------------------------------------
def test_pair_similarity_is_the_engines_with_self_pairs_exactly_one():
    """A self-pair's cosine is 1 by the engine's rule, not 1 give or take a rounding error
    that would order the self-pairs at random in a rank correlation."""
    from evaluation.engine.metrics.human import model_pair_similarity, unit_rows

    x = np.random.default_rng(3).normal(size=(60, 7))
    i = np.r_[np.arange(60), np.arange(59)]
    j = np.r_[np.arange(60), np.arange(1, 60)]
    ours = compare._pair_similarity(unit_rows(x), i, j)
    assert np.array_equal(ours[:60], np.ones(60))
    assert ours == pytest.approx(model_pair_similarity(x, i, j), abs=1e-15)
    # Past GRAM_ROWS stimuli, chunked: the same rule.
    many = np.random.default_rng(4).normal(size=(compare.GRAM_ROWS + 5, 3))
    k = np.arange(len(many))
    assert np.array_equal(compare._pair_similarity(unit_rows(many), k, k), np.ones(len(k)))


def test_the_pages_correlation_with_people_is_pair_alignment_with_self_pairs(enqueued):
    from evaluation.engine.metrics.human import pair_alignment
    from evaluation.judgments import target_data

    dataset = make_text_dataset()
    rows = [
        JudgmentRow(stimuli=(a, b), value=float(7 - abs(a - b)))
        for a in range(8)
        for b in range(a, 8)  # with each stimulus paired with itself (rated 7)
    ]
    judgments = judgments_create(dataset=dataset, name="selfs", kind="pairs", rows=rows)
    tfidf = services.model_register(name="tfidf", source="baseline", identifier="tfidf")
    small = make_text_model()
    run = services.run_create(
        dataset=dataset, models=[tfidf, small], metrics=[knn_entry(k=1, split="loo")]
    )
    run_steps(run)
    target = judgments.target
    result = compare.compare(target=target, models=[tfidf, small], layers={})
    ratings = target_data(target).ratings
    assert ratings.self_pairs == 8
    for side, value, _ in result.scatters:
        score = pair_alignment(side.embedding_set.load(), ratings, correlation="spearman")
        assert value == pytest.approx(score.value, abs=1e-12)
        assert result.intervals[side.model.pk] == pytest.approx(
            (score.ci_low, score.ci_high), abs=1e-12
        )


def test_a_nan_embedding_is_named_not_a_server_error(scored, monkeypatch):
    target, tfidf, small = scored
    load = compare.EmbeddingSet.load

    def with_nan(self, *args, **kwargs):
        x = np.array(load(self, *args, **kwargs), dtype=np.float64)
        x[2, 0] = np.nan
        return x

    monkeypatch.setattr(compare.EmbeddingSet, "load", with_nan)
    result = compare.compare(target=target, models=[tfidf, small], layers={}, order_by="cluster")
    assert any("NaN or infinite value" in problem for problem in result.problems)


def test_rho_a_resamples_equal_rho_a_of_each_resamples_repeated_pairs():
    """The vectorised rho-a (weighted ranks) is the engine's rho-a of each resample's pairs
    repeated as often as they enter, to the last bit on this tied toy."""
    from evaluation.engine.metrics import human as human_metrics
    from evaluation.engine.metrics.human import PairRatings

    rng = np.random.default_rng(5)
    i, j = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    pairs = PairRatings(i, j, rng.integers(1, 8, 200).astype(float), np.ones(200, dtype=int))
    model = rng.normal(size=200)
    plan = compare.interval_plan("rho_a", 200)
    assert (plan.resamples, plan.pairs) == (1000, 200)
    ours = compare._rho_a_resamples(model, pairs, 30, plan)
    counts = human_metrics.resample_counts(30, 1000, 0)
    for k in (0, 1, 500, 999):
        weights = human_metrics.pair_weights(counts[k : k + 1], i, j)[0].astype(np.int64)
        rows = np.repeat(np.arange(200), weights)
        assert ours[k] == pytest.approx(compare.correlation(model[rows], pairs.mean[rows], "rho_a"))


@pytest.mark.parametrize("measure", ["rho_a", "kendall_tau_a"])
def test_rank_a_intervals_are_bounded_and_the_page_says_so(
    researcher_client, scored, monkeypatch, measure
):
    """On a large target rho-a and tau-a get fewer resamples over a sample of the pairs
    (RANK_A_BUDGET pair-resamples), and the page says how its interval was drawn."""
    plan = compare.interval_plan(measure, 50_000)
    assert plan.resamples * plan.pairs <= compare.RANK_A_BUDGET and plan.resamples >= 200
    assert compare.interval_plan("spearman", 50_000).resamples == 1000
    monkeypatch.setattr(compare, "RANK_A_BUDGET", 200 * 20)  # the toy's 28 pairs are "many"
    target, tfidf, small = scored
    result = compare.compare(target=target, models=[tfidf, small], layers={}, measure=measure)
    assert result.intervals[small.pk] is not None
    assert (result.interval.resamples, result.interval.pairs) == (200, 20)
    page = researcher_client.get(
        reverse("evaluation:compare_section"),
        {"target": target.pk, "models": [tfidf.pk, small.pk], "section": "people",
         "measure": measure},
    ).content.decode()  # fmt: skip
    assert "200 resamples of a seeded sample of 20 of the 28 judged pairs" in page


class _CountedNames:
    """A stimulus that counts how often its name is read."""

    reads = 0

    def __init__(self, stimulus):
        self._stimulus = stimulus

    def __getattr__(self, attribute):
        if attribute == "name":
            _CountedNames.reads += 1
        return getattr(self._stimulus, attribute)


def test_pair_table_reads_the_names_once_not_on_every_sort():
    from types import SimpleNamespace

    stimuli = [_CountedNames(SimpleNamespace(name=n)) for n in ["b", "a", "c", "a2"]]
    i, j = np.array([0, 1, 0, 3, 3, 1]), np.array([1, 2, 2, 0, 2, 3])
    table = compare.PairTable(
        key="t", columns=[("model", "Model")], stimuli=stimuli, i=i, j=j,
        values={"model": np.array([0.5, 0.5, 0.5, 0.1, 0.1, 0.9])},
    )  # fmt: skip
    _CountedNames.reads = 0
    for sort in ("pair", "-model", "model", "-size", "pair"):
        table.order(sort)
    assert _CountedNames.reads == len(stimuli)  # once each, for the whole table
    names = [(stimuli[i[k]].name, stimuli[j[k]].name) for k in table.order("model")]
    # ties (equal model values) by the pair's names, first then second
    assert names == [("a2", "b"), ("a2", "c"), ("a", "c"), ("b", "a"), ("b", "c"), ("a", "a2")]


def test_people_names_only_the_pairs_it_plots(scored, monkeypatch):
    target, tfidf, small = scored
    monkeypatch.setattr(compare, "MAX_PAIRS_IN_SCATTER", 5)
    result = compare.compare(target=target, models=[tfidf, small], layers={}, sections=())
    inputs = compare.Inputs(result)
    counted = [_CountedNames(s) for s in inputs.stimuli]
    inputs._stimuli = counted
    _CountedNames.reads = 0
    compare._people(result, inputs)
    # the scatter's 5 hover names (two stimuli each) and its 5 CSV rows per model
    assert _CountedNames.reads == 2 * 5 + 2 * 5 * 2


def test_a_row_scored_target_shows_each_pairs_mean_in_its_cell(enqueued):
    """Scored by row, a pair can be published twice (and either way round): its cell in
    the people's matrix is the mean of its rows, and each pair counts once in the title."""
    dataset = make_text_dataset()
    rows = [JudgmentRow(stimuli=(a, a + 1), value=float(a)) for a in range(7)]
    rows += [JudgmentRow(stimuli=(1, 0), value=4.0), JudgmentRow(stimuli=(0, 1), value=5.0)]
    judgments = judgments_create(
        dataset=dataset, name="rows", kind="pairs", rows=rows, scoring_unit="row"
    )
    tfidf = services.model_register(name="tfidf", source="baseline", identifier="tfidf")
    small = make_text_model()
    run = services.run_create(
        dataset=dataset, models=[tfidf, small], metrics=[knn_entry(k=1, split="loo")]
    )
    run_steps(run)
    result = compare.compare(
        target=judgments.target, models=[tfidf, small], layers={}, sections=("matrices",)
    )
    assert result.matrix_judged == 7
    assert "People: mean rating of 7 judged pairs" in result.human_heatmap.svg
    names = [s.name for s in dataset.stimuli.order_by("order")]
    assert len(result.human_heatmap.rows) == 7  # a row per pair
    (cell,) = [
        row[4:]
        for row in result.human_heatmap.rows
        if {row[2].split(" [")[0], row[3].split(" [")[0]} == {names[0], names[1]}
    ]
    assert cell == [pytest.approx(3.0), 3]  # the mean of its rows 0, 4 and 5; three rows
    for _, residual in result.residuals:
        assert len(residual.rows) == 7


def test_storage_is_asked_only_about_the_chosen_sets(scored, monkeypatch):
    """On S3 every is_stored() is a request: a view checks the chosen layer's file of each
    model, and CKA (when computed, not on a cache hit) the layers it reads."""
    target, tfidf, small = scored
    asked = []
    is_stored = compare.EmbeddingSet.is_stored
    monkeypatch.setattr(
        compare.EmbeddingSet, "is_stored", lambda self: asked.append(self.pk) or is_stored(self)
    )
    compare.compare(target=target, models=[tfidf, small], layers={})
    layers = len(compare.latest_embeddings(tfidf, target)) + len(
        compare.latest_embeddings(small, target)
    )
    asked.clear()
    result = compare.compare(target=target, models=[tfidf, small], layers={})  # cache hits
    assert sorted(asked) == sorted(side.embedding_set.pk for side in result.sides)
    assert result.cka is not None and layers >= 2


def test_the_cache_key_names_the_models_their_layers_and_the_judgments_scale(scored):
    target, tfidf, small = scored
    result = compare.prepare(target=target, models=[tfidf, small], layers={})
    key = compare.section_key(result, "matrices")
    small.name = "renamed"  # titles name the model
    assert compare.section_key(result, "matrices") != key
    small.name = "minilm"
    result.sides[1].layer = "another"  # same file, another layer's name
    assert compare.section_key(result, "matrices") != key
    result.sides[1].layer = compare.prepare(target=target, models=[small], layers={}).sides[0].layer
    assert compare.section_key(result, "matrices") == key
    judgments = target.judgments
    judgments.scale_max = 99.0  # the people's matrix's colour scale
    judgments.save()
    assert compare.section_key(result, "matrices") != key


def test_neighbour_and_layer_links_replace_their_value_and_keep_sync(researcher_client, scored):
    import re
    from urllib.parse import parse_qs

    target, tfidf, small = scored
    stimulus = target.dataset.stimuli.order_by("order")[3]
    query = {"target": target.pk, "models": [tfidf.pk, small.pk], "sync": "1",
             "stimulus": stimulus.pk, f"layer_{small.pk}": small.default_layer}  # fmt: skip
    response = researcher_client.get(reverse("evaluation:compare"), query)
    page = response.content.decode()
    section = page[page.index('id="section-neighbours"') :]
    links = re.findall(r'<a href="\?([^"]+)"', section)
    assert links
    for link in links:
        params = parse_qs(link.replace("&amp;", "&"))
        assert len(params["stimulus"]) == 1 and params["sync"] == ["1"]
    layer_query = parse_qs(response.context["layer_queries"][small.pk])
    assert f"layer_{small.pk}" not in layer_query and layer_query["sync"] == ["1"]
    assert layer_query["stimulus"] == [str(stimulus.pk)]


def test_rho_a_is_spearmans_rho_averaged_over_every_tie_breaking():
    """An independent reference: rho-a is the expected Spearman rho when ties are broken at
    random (Nili et al. 2014), here averaged over every way of breaking them, each rho by
    the untied formula 1 - 6 sum d^2 / (n^3 - n)."""
    from itertools import permutations, product

    a = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    b = np.array([2.0, 1.0, 1.0, 4.0, 3.0, 3.0])
    n = len(a)

    def breakings(values):
        """Every strict ranking consistent with ``values`` (ties in every order)."""
        groups = [np.flatnonzero(values == v) for v in np.unique(values)]
        for orders in product(*(permutations(g) for g in groups)):
            ranks = np.empty(n)
            ranks[np.concatenate(orders)] = np.arange(1, n + 1)
            yield ranks

    rhos = [
        1 - 6 * ((ra - rb) ** 2).sum() / (n**3 - n) for ra in breakings(a) for rb in breakings(b)
    ]
    assert compare.correlation(a, b, "rho_a") == pytest.approx(np.mean(rhos), abs=1e-12)


@pytest.mark.parametrize("method", ["pearson", "spearman", "rho_a", "kendall_tau_a"])
def test_rsa_correlate_is_what_rsa_computes(method):
    from evaluation.engine.errors import MetricError
    from evaluation.engine.metrics.rsa import correlate, rsa

    rdm_a = np.random.default_rng(1).normal(size=10)  # 5 stimuli
    rdm_b = np.round(np.random.default_rng(2).normal(size=10), 1)
    assert correlate(rdm_a, rdm_b, method) == rsa(rdm_a, rdm_b, method=method)
    assert correlate(rdm_a[:7], rdm_b[:7], method) == pytest.approx(
        compare.correlation(rdm_a[:7], rdm_b[:7], method)
    )  # not a triangle: correlate does not ask for one
    with pytest.raises(MetricError, match="Unknown RSA method"):
        correlate(rdm_a, rdm_b, "cosine")  # type: ignore[arg-type]


def test_the_scatter_caption_says_when_it_plots_a_sample(researcher_client, scored, monkeypatch):
    target, tfidf, small = scored
    query = {"target": target.pk, "models": [tfidf.pk, small.pk], "section": "people"}
    url = reverse("evaluation:compare_section")
    assert "all 28 plotted" in researcher_client.get(url, query).content.decode()
    monkeypatch.setattr(compare, "MAX_PAIRS_IN_SCATTER", 10)
    page = researcher_client.get(url, {**query, "measure": "pearson"}).content.decode()
    assert "a seeded sample of 10 of the 28 pairs plotted; the correlation is over them all" in page


def test_chunked_pair_similarity_gathers_a_bounded_number_of_cells(monkeypatch):
    """Past GRAM_ROWS stimuli the pairs are gathered in chunks of at most GRAM_ROWS**2
    numbers whatever the dimension (20,000 pairs of 10,000 TF-IDF dimensions were 3 GB)."""
    from evaluation.engine.metrics import human as human_metrics

    monkeypatch.setattr(compare, "GRAM_ROWS", 20)
    cells = []
    pair_cosines = human_metrics.pair_cosines

    def counted(unit, i, j):
        cells.append(len(i) * unit.shape[1])
        return pair_cosines(unit, i, j)

    monkeypatch.setattr(human_metrics, "pair_cosines", counted)
    x = human_metrics.unit_rows(np.random.default_rng(6).normal(size=(50, 100)))
    i, j = np.triu_indices(50, k=1)
    ours = compare._pair_similarity(x, i, j)
    assert ours == pytest.approx(np.einsum("ij,ij->i", x[i], x[j]))
    assert len(cells) > 1 and max(cells) <= 20**2
