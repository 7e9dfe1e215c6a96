"""CKA must equal the published formulas written out directly (HSIC as tr(KHLH)/(n-1)^2,
Song et al.'s unbiased HSIC term by term, Kornblith et al.'s RBF bandwidth), keep the
properties CKA is used for, and cka_matrix must agree with cka pair by pair."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group
from sklearn.datasets import load_digits

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import cka as cka_module
from evaluation.engine.metrics.cka import cka, cka_matrix

VARIANTS = [("linear", True), ("linear", False), ("rbf", True), ("rbf", False)]


def reference_hsic_biased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


def reference_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. 2012, eq. 5: K~, L~ are K, L with zeroed diagonals."""
    n = len(k)
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    one = np.ones(n)
    return float(
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def reference_kernel(x: np.ndarray, kernel: str, factor: float = 1.0) -> np.ndarray:
    if kernel == "linear":
        return x @ x.T
    # Kornblith et al.'s code: sigma^2 = factor^2 * median of all n^2 squared distances.
    squared = squareform(pdist(x, "sqeuclidean"))
    return np.exp(-squared / (2 * factor**2 * np.median(squared)))


def reference_cka(x, y, *, kernel, unbiased, factor=1.0) -> float:
    hsic = reference_hsic_unbiased if unbiased else reference_hsic_biased
    k, l = reference_kernel(x, kernel, factor), reference_kernel(y, kernel, factor)  # noqa: E741
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def kornblith_feature_space_linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Transcribed from Kornblith et al.'s published notebook (feature_space_linear_cka)."""
    x = x - np.mean(x, 0, keepdims=True)
    y = y - np.mean(y, 0, keepdims=True)
    dot_product_similarity = np.linalg.norm(x.T.dot(y)) ** 2
    normalization_x = np.linalg.norm(x.T.dot(x))
    normalization_y = np.linalg.norm(y.T.dot(y))
    if debiased:
        n = x.shape[0]
        rows_x, rows_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
        norm_x, norm_y = np.sum(rows_x), np.sum(rows_y)

        def helper(xty, rx, ry, nx, ny):  # _debiased_dot_product_similarity_helper
            return xty - n / (n - 2.0) * rx.dot(ry) + nx * ny / ((n - 1) * (n - 2))

        dot_product_similarity = helper(dot_product_similarity, rows_x, rows_y, norm_x, norm_y)
        normalization_x = np.sqrt(helper(normalization_x**2, rows_x, rows_x, norm_x, norm_x))
        normalization_y = np.sqrt(helper(normalization_y**2, rows_y, rows_y, norm_y, norm_y))
    return float(dot_product_similarity / (normalization_x * normalization_y))


def related(n: int, dx: int, dy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two representations that share some structure (so CKA is neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx)) + 2.0  # off-centre on purpose: estimators must centre
    y = np.tanh(x @ rng.normal(size=(dx, dy)) / np.sqrt(dx)) + 0.5 * rng.normal(size=(n, dy))
    return x, y


# (n, dx, dy): more stimuli than features uses the linear feature form, fewer the Gram form.
SHAPES = [(40, 6, 9), (14, 50, 70)]


@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cka_equals_published_formulas(kernel, unbiased, shape):
    x, y = related(*shape, seed=1)
    expected = reference_cka(x, y, kernel=kernel, unbiased=unbiased)
    assert 0.05 < abs(expected) < 0.98  # a value that can tell estimators apart
    assert cka(x, y, kernel=kernel, unbiased=unbiased) == pytest.approx(expected, abs=1e-10)


def test_both_linear_forms_are_exercised():
    for (n, dx, dy), features in zip(SHAPES, [True, False], strict=True):
        assert cka_module._use_features("linear", n, [dx], [dy], 1) is features


@pytest.mark.parametrize("factor", [0.4, 2.0])
def test_rbf_bandwidth_factor_scales_the_median_distance(factor):
    x, y = related(30, 8, 5, seed=2)
    expected = reference_cka(x, y, kernel="rbf", unbiased=False, factor=factor)
    ours = cka(x, y, kernel="rbf", unbiased=False, rbf_sigma=factor)
    assert ours == pytest.approx(expected, abs=1e-10)
    assert ours != pytest.approx(cka(x, y, kernel="rbf", unbiased=False), abs=1e-3)


def test_linear_biased_cka_equals_the_feature_space_formula():
    # Kornblith et al. eq. 4 on centred data: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F).
    pixels = load_digits().data[:200].astype(np.float64)
    x = pixels - pixels.mean(axis=0)
    y = np.maximum(x @ np.random.default_rng(0).normal(size=(64, 32)), 0.0)
    y = y - y.mean(axis=0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert cka(pixels, y, kernel="linear", unbiased=False) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
def test_cka_of_a_representation_with_itself_is_one(kernel, unbiased):
    x, _ = related(25, 7, 3, seed=3)
    assert cka(x, x, kernel=kernel, unbiased=unbiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
def test_cka_ignores_rotation_and_isotropic_scaling(kernel, unbiased):
    x, y = related(30, 10, 12, seed=4)
    rotation = ortho_group.rvs(10, random_state=5)
    before = cka(x, y, kernel=kernel, unbiased=unbiased)
    after = cka(7.5 * x @ rotation, y, kernel=kernel, unbiased=unbiased)
    assert after == pytest.approx(before, abs=1e-10)
    # ...but not anisotropic scaling, which changes the geometry.
    stretched = x * np.linspace(0.1, 10.0, 10)
    assert cka(stretched, y, kernel=kernel, unbiased=unbiased) != pytest.approx(before, abs=1e-3)


def test_unbiased_estimator_removes_the_pull_towards_one_when_features_outnumber_stimuli():
    # Independent representations, 20 stimuli, 2000 features (Nguyen et al.'s concern).
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 2000)), rng.normal(size=(20, 2000))
    assert cka(x, y, unbiased=False) > 0.8
    assert abs(cka(x, y, unbiased=True)) < 0.1


@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
def test_cka_matrix_equals_pairwise_cka(kernel, unbiased):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(24, 5))
    layers = [
        np.tanh(base @ rng.normal(size=(5, d))) + 0.3 * rng.normal(size=(24, d))
        for d in (3, 8, 30, 4)
    ]
    others = [base, base**2]
    square = cka_matrix(layers, kernel=kernel, unbiased=unbiased)
    cross = cka_matrix(layers, others, kernel=kernel, unbiased=unbiased)
    assert square.shape == (4, 4) and cross.shape == (4, 2)
    for i, a in enumerate(layers):
        for j, b in enumerate(layers):
            expected = cka(a, b, kernel=kernel, unbiased=unbiased)
            assert square[i, j] == pytest.approx(expected, abs=1e-12)
        for j, b in enumerate(others):
            assert cross[i, j] == pytest.approx(
                cka(a, b, kernel=kernel, unbiased=unbiased), abs=1e-12
            )
    np.testing.assert_array_equal(square, square.T)
    assert len(np.unique(np.round(square[np.triu_indices(4, 1)], 6))) == 6  # not a constant fill


@pytest.mark.parametrize(
    ("kernel", "preparer", "shape"),
    [("rbf", "_gram_layer", (12, 20)), ("linear", "_feature_layer", (40, 6))],
)
def test_cka_matrix_prepares_each_layer_once(monkeypatch, kernel, preparer, shape):
    calls = []
    original = getattr(cka_module, preparer)

    def counting(x, **options):
        calls.append(x.shape)
        return original(x, **options)

    monkeypatch.setattr(cka_module, preparer, counting)
    layers = [np.random.default_rng(i).normal(size=shape) for i in range(5)]
    cka_matrix(layers, kernel=kernel)
    assert len(calls) == 5
    calls.clear()
    cka_matrix(layers, layers[:3], kernel=kernel)
    assert len(calls) == 8


def offset_example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The issue's example: two features of x shifted by 1e4, which CKA must not notice."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 256))
    zy = z[:, :64] @ rng.normal(size=(64, 32)) + rng.normal(size=(300, 32))
    shifted = z.copy()
    shifted[:, :2] += 1e4
    return z, shifted, zy


@pytest.mark.parametrize("features", [True, False])
@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
def test_a_large_mean_offset_does_not_change_cka(monkeypatch, kernel, unbiased, features):
    # Every variant and both linear forms (the Gram form is forced by patching the choice).
    monkeypatch.setattr(
        cka_module, "_use_features", lambda kernel, *a, **k: features and kernel == "linear"
    )
    z, shifted, zy = offset_example()
    # The formulas hold for the shifted data, but a Gram matrix of raw values near 1e8 loses
    # eight digits to cancellation; Kornblith et al.'s code centres the features first.
    expected = reference_cka(shifted - shifted.mean(axis=0), zy, kernel=kernel, unbiased=unbiased)
    if kernel == "linear":
        published = kornblith_feature_space_linear_cka(shifted, zy, debiased=unbiased)
        assert expected == pytest.approx(published, abs=1e-12)
    assert cka(shifted, zy, kernel=kernel, unbiased=unbiased) == pytest.approx(expected, abs=1e-9)
    assert cka(shifted, zy, kernel=kernel, unbiased=unbiased) == pytest.approx(
        cka(z, zy, kernel=kernel, unbiased=unbiased), abs=1e-9
    )
    assert cka_matrix([zy], [shifted, z], kernel=kernel, unbiased=unbiased)[0] == pytest.approx(
        [expected, expected], abs=1e-9
    )


@pytest.mark.parametrize("unbiased", [True, False])
def test_real_pixels_far_from_zero_match_kornblith_et_al(unbiased):
    # Digit pixels (several columns are always 0) moved to 1e4 + pixel, against a ReLU
    # projection: the constant columns must drop out and nothing else change.
    pixels = load_digits().data[:400].astype(np.float64)
    y = np.maximum(pixels @ np.random.default_rng(1).normal(size=(64, 16)), 0.0)
    expected = kornblith_feature_space_linear_cka(pixels, y, debiased=unbiased)
    assert cka(pixels + 1e4, y, unbiased=unbiased) == pytest.approx(expected, abs=1e-10)
    assert cka_matrix([pixels + 1e4, pixels], [y], unbiased=unbiased)[:, 0] == pytest.approx(
        [expected, expected], abs=1e-10
    )


@pytest.mark.parametrize("offset", [0.1, 1e4, 1e12])
@pytest.mark.parametrize(("kernel", "unbiased"), VARIANTS)
def test_a_constant_representation_is_refused_whatever_its_offset(kernel, unbiased, offset):
    _, y = related(20, 4, 4, seed=8)
    constant = np.full((20, 4), offset) * np.array([1.0, np.pi, -np.e, 1 / 3])
    with pytest.raises(MetricError, match="constant across the stimuli"):
        cka(constant, y, kernel=kernel, unbiased=unbiased)
    with pytest.raises(MetricError, match="constant across the stimuli"):
        cka(y, constant, kernel=kernel, unbiased=unbiased)


def test_unbiased_cka_refuses_a_representation_whose_self_hsic_is_zero():
    # One stimulus differs from 19 identical ones: Song et al.'s estimator of HSIC(X, X)
    # is exactly 0 (reference_hsic_unbiased agrees), so CKA would divide by zero.
    x, y = np.zeros((20, 3)), related(20, 4, 4, seed=8)[1]
    x[0] = 1.0
    assert reference_hsic_unbiased(x @ x.T, x @ x.T) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MetricError, match="unbiased HSIC with itself is not positive"):
        cka(x, y, unbiased=True)
    assert np.isfinite(cka(x, y, unbiased=False))


def test_bad_inputs_are_explained():
    x, y = related(20, 4, 4, seed=8)
    with pytest.raises(MetricError, match="same stimuli"):
        cka(x, y[:15])
    with pytest.raises(MetricError, match="at least 4"):
        cka(x[:3], y[:3], unbiased=True)
    assert np.isfinite(cka(x[:3], y[:3], unbiased=False))
    with pytest.raises(MetricError, match="at least 3"):
        cka(x[:2], y[:2], unbiased=False)
    with pytest.raises(MetricError, match="constant"):
        cka(np.full((20, 4), 0.1), y)
    mostly_equal = np.zeros((20, 4))
    mostly_equal[0] = 1.0  # 171 of 190 pairs at distance 0
    with pytest.raises(MetricError, match="median distance"):
        cka(mostly_equal, y, kernel="rbf")
    broken = x.copy()
    broken[3, 1] = np.nan
    with pytest.raises(MetricError, match="NaN"):
        cka(broken, y)
    with pytest.raises(MetricError, match="Unknown CKA kernel"):
        cka(x, y, kernel="poly")  # type: ignore[arg-type]
    with pytest.raises(MetricError, match="empty"):
        cka_matrix([])
