"""Similarities, RDMs and RSA must equal independent references: scipy's pdist, spearmanr
and pearsonr, scikit-learn's pairwise kernels, and rsatoolbox's RDM comparisons, on real
images (scikit-learn's digits) and on RDMs full of ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rsatoolbox
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr, spearmanr
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import cosine_similarity, euclidean_distances

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import similarity
from evaluation.engine.metrics.rsa import rsa, rsa_between, strict_inversions
from evaluation.engine.metrics.similarity import pairwise_similarity, rdm, upper_triangle

RSATOOLBOX_NAMES = {
    "pearson": "corr",
    "spearman": "spearman",
    "kendall_tau_a": "tau-a",
    "rho_a": "rho-a",
}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """120 real digit images as two representations: raw pixels and 2x2-pooled pixels."""
    data = load_digits()
    images = data.images[:120].astype(np.float64)
    pooled = images.reshape(120, 4, 2, 4, 2).mean(axis=(2, 4))
    return images.reshape(120, -1), pooled.reshape(120, -1), data.target[:120]


def rsatoolbox_compare(a: np.ndarray, b: np.ndarray, method: str) -> float:
    first = rsatoolbox.rdm.RDMs(dissimilarities=a[None, :])
    second = rsatoolbox.rdm.RDMs(dissimilarities=b[None, :])
    return float(rsatoolbox.rdm.compare(first, second, method=RSATOOLBOX_NAMES[method])[0, 0])


@pytest.mark.parametrize("kind", ["correlation", "cosine", "euclidean"])
def test_rdm_equals_scipy_pdist_on_real_images(digits, kind):
    pixels, _, _ = digits
    np.testing.assert_allclose(rdm(pixels, kind=kind), pdist(pixels, metric=kind), atol=1e-10)


@pytest.mark.parametrize("kind", ["correlation", "euclidean"])
def test_rdm_built_in_blocks_keeps_pdist_order(digits, monkeypatch, kind):
    # Blocks of 7 rows put block edges everywhere; a misplaced entry would show here.
    monkeypatch.setattr(similarity, "ROW_BLOCK", 7)
    pixels, _, _ = digits
    np.testing.assert_allclose(
        squareform(rdm(pixels[:50], kind=kind)), squareform(pdist(pixels[:50], kind)), atol=1e-10
    )


def test_pairwise_similarities_equal_sklearn_and_numpy(digits):
    pixels, pooled, _ = digits
    x, y = pixels[:30], pixels[30:75]
    np.testing.assert_allclose(
        pairwise_similarity(x, y, kind="cosine"), cosine_similarity(x, y), atol=1e-12
    )
    np.testing.assert_allclose(
        pairwise_similarity(x, y, kind="neg_euclidean"), -euclidean_distances(x, y), atol=1e-9
    )
    np.testing.assert_allclose(pairwise_similarity(x, y, kind="dot"), x @ y.T)
    # Row-wise Pearson: the cross block of numpy's correlation matrix.
    expected = np.corrcoef(np.vstack([x, y]))[:30, 30:]
    np.testing.assert_allclose(pairwise_similarity(x, y, kind="pearson"), expected, atol=1e-12)
    square = pairwise_similarity(pooled, kind="pearson")
    np.testing.assert_allclose(square, np.corrcoef(pooled), atol=1e-12)


def test_upper_triangle_matches_squareform_order():
    matrix = squareform(np.arange(1.0, 11.0))  # 5 x 5 symmetric, condensed = 1..10
    np.testing.assert_array_equal(upper_triangle(matrix), np.arange(1.0, 11.0))


@pytest.mark.parametrize("method", list(RSATOOLBOX_NAMES))
def test_rsa_equals_rsatoolbox_on_real_image_rdms(digits, method):
    pixels, pooled, _ = digits
    a, b = pdist(pixels, "correlation"), pdist(pooled, "euclidean")
    assert rsa(a, b, method=method) == pytest.approx(rsatoolbox_compare(a, b, method), abs=1e-12)


@pytest.mark.parametrize("method", list(RSATOOLBOX_NAMES))
def test_rsa_equals_rsatoolbox_with_many_ties(digits, method):
    # A categorical model RDM (0 within a digit class, 1 across) against human-like ratings
    # on a coarse 1-7 scale: the case where the tie handling of each method matters.
    pixels, _, labels = digits
    model = pdist(labels[:, None], lambda u, v: float(u[0] != v[0]))
    ratings = np.ceil(7 * pdist(pixels, "cosine") / pdist(pixels, "cosine").max())
    ours = rsa(model, ratings, method=method)
    assert ours == pytest.approx(rsatoolbox_compare(model, ratings, method), abs=1e-12)


def test_pearson_and_spearman_equal_scipy(digits):
    pixels, pooled, _ = digits
    a, b = pdist(pixels, "cosine"), pdist(pooled, "cityblock")
    assert rsa(a, b, method="pearson") == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)
    rounded = np.round(b, -1)  # ties: spearmanr averages their ranks, as we must
    expected = spearmanr(a, rounded).statistic
    assert rsa(a, rounded, method="spearman") == pytest.approx(expected, abs=1e-12)


def brute_force_tau_a(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-a by its definition: (concordant - discordant) / number of pairs."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    signs = [np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs]
    return float(np.sum(signs)) / len(pairs)


def test_tau_a_equals_its_definition_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, 66).astype(float)  # an RDM of 12 stimuli
    b = a + rng.integers(0, 3, 66)
    assert rsa(a, b, method="kendall_tau_a") == pytest.approx(brute_force_tau_a(a, b), abs=1e-15)
    assert rsa(a, -b, method="kendall_tau_a") == pytest.approx(-brute_force_tau_a(a, b))


@pytest.mark.parametrize("n", [2, 3, 17, 64, 301])
def test_strict_inversions_count_every_decreasing_pair(n):
    values = np.random.default_rng(n).integers(0, 9, n)
    expected = sum(values[i] > values[j] for i, j in itertools.combinations(range(n), 2))
    assert strict_inversions(values) == expected


def test_rho_a_equals_spearman_without_ties(digits):
    pixels, pooled, _ = digits
    a, b = pdist(pixels, "correlation"), pdist(pooled, "correlation")
    assert rsa(a, b, method="rho_a") == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


@pytest.mark.parametrize("method", list(RSATOOLBOX_NAMES))
def test_rsa_between_compares_the_two_rdms(digits, method):
    pixels, pooled, _ = digits
    expected = rsatoolbox_compare(pdist(pixels, "cosine"), pdist(pooled, "cosine"), method)
    ours = rsa_between(pixels, pooled, rdm_kind="cosine", method=method)
    assert ours == pytest.approx(expected, abs=1e-10)


def test_identical_representations_have_rsa_one(digits):
    pixels, _, _ = digits
    for method in ("pearson", "spearman", "kendall_tau_a"):
        assert rsa_between(pixels, pixels, method=method) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_constant_rdm_is_an_error_for_correlations(method):
    with pytest.raises(MetricError, match="constant"):
        rsa(np.ones(10), np.arange(10.0), method=method)


@pytest.mark.parametrize("method", ["kendall_tau_a", "rho_a"])
def test_constant_rdm_scores_zero_for_tie_aware_methods_like_rsatoolbox(method):
    a, b = np.ones(10), np.arange(10.0)
    assert rsa(a, b, method=method) == 0.0 == rsatoolbox_compare(a, b, method)


def test_bad_rdm_inputs_are_explained():
    with pytest.raises(MetricError, match="different numbers of pairs"):
        rsa(np.arange(6.0), np.arange(10.0), method="pearson")
    with pytest.raises(MetricError, match="at least 3"):
        rsa(np.arange(1.0), np.arange(1.0), method="pearson")
    with pytest.raises(MetricError, match="NaN"):
        rsa(np.array([1.0, np.nan, 2.0]), np.arange(3.0), method="spearman")
    with pytest.raises(MetricError, match="condensed"):
        rsa(np.eye(3), np.eye(3), method="spearman")
    with pytest.raises(MetricError, match="Unknown RSA method"):
        rsa(np.arange(3.0), np.arange(3.0), method="kendall")  # type: ignore[arg-type]


def test_bad_representations_are_explained(digits):
    pixels, pooled, _ = digits
    with pytest.raises(MetricError, match="120 and 60 stimuli"):
        rsa_between(pixels, pooled[:60])
    with pytest.raises(MetricError, match="at least 3"):
        rdm(pixels[:2])
    flat = pixels[:10].copy()
    flat[4] = 5.0
    with pytest.raises(MetricError, match="Row 4 .* constant"):
        rdm(flat, kind="correlation")
    flat[4] = 0.0
    with pytest.raises(MetricError, match="Row 4 .* all zeros"):
        rdm(flat, kind="cosine")
    broken = pixels[:10].copy()
    broken[2, 3] = np.inf
    with pytest.raises(MetricError, match="row 2"):
        rdm(broken, kind="euclidean")
    with pytest.raises(MetricError, match="same space"):
        pairwise_similarity(pixels, pooled, kind="cosine")
