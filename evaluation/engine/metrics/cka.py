"""Centred kernel alignment (CKA) between two representations of the same stimuli.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (Kornblith et al. 2019), with K and
L the stimulus-by-stimulus kernel matrices of the two representations, and HSIC either:

- biased: tr(K H L H) / (n - 1)^2, H the centring matrix (Gretton et al. 2005); or
- unbiased (default): the estimator of Song et al. 2012, used by Nguyen et al. 2021 because
  the biased one drifts towards 1 when features outnumber stimuli. It equals the inner
  product of the two "U-centred" kernels (Szekely and Rizzo 2014) over n (n - 3).

Both are written as one inner product of per-representation matrices (H K H or the
U-centred K), so cka_matrix prepares each layer once and each pair costs one product-sum.
The linear kernel never needs the n x n matrices when stimuli outnumber features: the same
inner products follow from X^T Y (d x d), which is cheaper and much smaller; each call
picks whichever form costs fewer operations (the feature form whenever the n x n matrices
would pass GRAM_MEMORY_BYTES), and both give the same value. The RBF kernel has no such
shortcut: cka_matrix holds one n x n float64 matrix per distinct layer.

The RBF bandwidth follows Kornblith et al.'s published code: sigma^2 = factor^2 x the
median squared distance over all n^2 pairs, diagonal zeros included, so values can be
compared with theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.validation import embedding_matrix

Kernel = Literal["linear", "rbf"]
KERNELS: tuple[str, ...] = ("linear", "rbf")
# A self-HSIC this small next to the centred kernel's own size (its trace squared; n^2 for
# the RBF kernel, whose entries lie in [0, 1]) leaves no usable signal.
DEGENERATE = 1e-12
# Above this, linear CKA keeps features rather than n x n matrices even where the Gram
# form would be faster. The Gram form holds every layer_b matrix plus one layer_a matrix:
# 13 for 12 x 12 layers, 2.6 GB at 5000 stimuli.
GRAM_MEMORY_BYTES = 6 * 1024**3
# Memory-bound passes cost far more per element than a multiply-add inside BLAS; these
# weights (multiply-adds per n x n element) were measured with numpy's OpenBLAS.
CENTRING_WEIGHT = 60
VDOT_WEIGHT = 20
CROSS_BLOCK_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class _GramLayer:
    """H K H (biased) or the U-centred K (unbiased): HSIC with another is one vdot."""

    gram: np.ndarray
    self_hsic: float


@dataclass(frozen=True)
class _FeatureLayer:
    """Column-centred features of a linear-kernel layer and their rows' squared norms."""

    features: np.ndarray
    row_norms: np.ndarray
    self_hsic: float


def _check_layers(layers: Sequence[np.ndarray], label: str) -> list[np.ndarray]:
    if len(layers) == 0:
        raise MetricError(f"{label} is empty: CKA needs at least one representation.")
    return [embedding_matrix(x, name=f"{label}[{i}]") for i, x in enumerate(layers)]


def _check_options(kernel: str, unbiased: bool, n: int, rbf_sigma: float) -> None:
    if kernel not in KERNELS:
        raise MetricError(f"Unknown CKA kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
    minimum = 4 if unbiased else 3
    if n < minimum:
        raise MetricError(
            f"CKA over {n} stimuli is not meaningful; the "
            f"{'unbiased' if unbiased else 'biased'} estimator needs at least {minimum}."
        )
    if not (np.isfinite(rbf_sigma) and rbf_sigma > 0):
        raise MetricError(f"The RBF bandwidth factor must be positive; got {rbf_sigma}.")


def _use_features(
    kernel: str, n: int, dims_a: list[int], dims_b: list[int], pairs: int, *, shared: bool = False
) -> bool:
    """Whether the linear feature form beats the Gram form (memory first, then time).

    ``shared``: the two lists are the same layers (cka_matrix without layers_b). Costs
    count multiply-adds, with X X^T and X^T X done by syrk (half a product) and every
    pass over an n x n matrix weighted as measured against BLAS throughput.
    """
    if kernel != "linear":
        return False
    held = len(dims_a) if shared else len(dims_b) + 1
    if held * n * n * 8 > GRAM_MEMORY_BYTES:
        return True
    built = dims_a if shared else dims_a + dims_b
    gram_cost = n * n * sum(d / 2 + CENTRING_WEIGHT for d in built) + pairs * n * n * VDOT_WEIGHT
    mean_cross = (sum(dims_a) / len(dims_a)) * (sum(dims_b) / len(dims_b))
    feature_cost = n * sum(d * d / 2 for d in built) + pairs * n * mean_cross
    return feature_cost < gram_cost


def _centre_columns(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``x`` minus its column means, with columns that vary only by rounding set to zero.

    Centring a column of one repeated value leaves the mean's rounding error in every entry,
    up to about n ulps of the value; kept, that residue would be measured as signal. The
    test compares each column's centred spread with its own raw size, so a real feature far
    from zero (an offset of 1e4 with unit spread) is kept whatever the offset.
    """
    centred = np.subtract(x, x.mean(axis=0), out=out)
    spread = np.einsum("ij,ij->j", centred, centred)
    size = np.einsum("ij,ij->j", x, x)
    centred[:, spread <= (2 * len(x) * np.finfo(np.float64).eps) ** 2 * size] = 0.0
    if not centred.any():
        raise MetricError(
            "A representation is constant across the stimuli, so its CKA with anything is "
            "undefined. Check that the layer's embeddings differ between stimuli."
        )
    return centred


def _kernel_matrix(centred: np.ndarray, kernel: str, rbf_sigma: float) -> np.ndarray:
    """The kernel of column-centred features (centring first changes no distance)."""
    gram = centred @ centred.T
    if kernel == "linear":
        return gram
    norms = np.diag(gram).copy()
    squared = norms[:, np.newaxis] + norms[np.newaxis, :] - 2.0 * gram
    np.maximum(squared, 0.0, out=squared)
    median = float(np.median(squared))
    if median == 0.0:
        raise MetricError(
            "More than half of the stimulus pairs have identical embeddings, so the RBF "
            "bandwidth (median distance) is zero; use the linear kernel."
        )
    squared /= -2.0 * rbf_sigma**2 * median
    return np.exp(squared, out=squared)


def _double_centre(k: np.ndarray) -> np.ndarray:
    """H K H, in place (K is a scratch matrix)."""
    means = k.mean(axis=0)
    k -= means[np.newaxis, :]
    k -= (means - means.mean())[:, np.newaxis]
    return k


def _u_centre(k: np.ndarray) -> np.ndarray:
    """U-centred K, in place: its inner product with another over n (n - 3) is Song et
    al.'s HSIC. Off the diagonal, K_ij - r_i / (n - 2) - r_j / (n - 2) + S / ((n - 1)(n - 2))
    with r the row sums and S the total of K with a zeroed diagonal; zero on it."""
    n = len(k)
    np.fill_diagonal(k, 0.0)
    row_sums = k.sum(axis=1)
    k -= (row_sums / (n - 2))[:, np.newaxis]
    k -= (row_sums / (n - 2) - row_sums.sum() / ((n - 1) * (n - 2)))[np.newaxis, :]
    np.fill_diagonal(k, 0.0)
    return k


def _feature_hsic(
    cross_sq: float, norms_a: np.ndarray, norms_b: np.ndarray, n: int, unbiased: bool
) -> float:
    """HSIC numerator of two linear kernels from ||X^T Y||_F^2 and the row norms.

    With centred features, tr(K~ L~) = ||X^T Y||^2 - k.l, 1'K~1 = -sum(k) and K~1 = -k
    (K~ is K with its diagonal k zeroed); Song et al.'s formula then reduces to this
    (Kornblith et al.'s feature_space_linear_cka with debiased=True).
    """
    if not unbiased:
        return cross_sq
    return float(
        cross_sq
        - n / (n - 2) * float(norms_a @ norms_b)
        + float(norms_a.sum()) * float(norms_b.sum()) / ((n - 1) * (n - 2))
    )


def _check_signal(self_hsic: float, centred: np.ndarray, kernel: str) -> None:
    """Refuse a self-HSIC that is not clearly positive next to the centred kernel's size.

    Centred against centred: the raw values' size says nothing about the signal (a feature
    offset by 1e4 would swamp it). The biased estimator is positive for any representation
    that varies; the unbiased one can fall to zero or below when almost all the variation
    sits in one or two stimuli, and its square root is then undefined.
    """
    if kernel == "linear":
        scale = float(np.einsum("ij,ij->", centred, centred)) ** 2
    else:
        scale = float(len(centred)) ** 2
    if not self_hsic > DEGENERATE * scale:
        raise MetricError(
            "A representation varies too little across the stimuli for CKA: its unbiased "
            "HSIC with itself is not positive (almost all of its variation sits in a few "
            "stimuli). Use unbiased=False or more stimuli."
        )


def _gram_layer(x: np.ndarray, *, kernel: str, unbiased: bool, rbf_sigma: float) -> _GramLayer:
    centred = _centre_columns(x)
    k = _kernel_matrix(centred, kernel, rbf_sigma)
    gram = _u_centre(k) if unbiased else _double_centre(k)
    self_hsic = float(np.vdot(gram, gram))
    _check_signal(self_hsic, centred, kernel)
    return _GramLayer(gram=gram, self_hsic=self_hsic)


def _feature_layer(
    x: np.ndarray, *, unbiased: bool, out: np.ndarray | None = None
) -> _FeatureLayer:
    """Centre ``x`` (into ``out`` when given, a slice of the stacked layers)."""
    centred = _centre_columns(x, out=out)
    norms = np.einsum("ij,ij->i", centred, centred)
    covariance = centred.T @ centred
    self_cross = float(np.einsum("ij,ij->", covariance, covariance))
    self_hsic = _feature_hsic(self_cross, norms, norms, len(x), unbiased)
    _check_signal(self_hsic, centred, "linear")
    return _FeatureLayer(features=centred, row_norms=norms, self_hsic=self_hsic)


def _gram_form(
    first: list[np.ndarray], second: list[np.ndarray] | None, options: dict[str, Any]
) -> np.ndarray:
    """CKA from centred Gram matrices: one vdot per pair.

    Without ``second`` every layer's matrix is kept; with it only the second set's, and
    each layer of the first set is prepared in turn, so memory is len(second) + 1 matrices.
    """
    targets = first if second is None else second
    prepared_b = [_gram_layer(x, **options) for x in targets]
    result = np.ones((len(first), len(targets)), dtype=np.float64)
    for i, x in enumerate(first):
        a = prepared_b[i] if second is None else _gram_layer(x, **options)
        start = i + 1 if second is None else 0
        for j in range(start, len(prepared_b)):
            b = prepared_b[j]
            result[i, j] = float(np.vdot(a.gram, b.gram)) / np.sqrt(a.self_hsic * b.self_hsic)
            if second is None:
                result[j, i] = result[i, j]
    return result


def _feature_form(
    first: list[np.ndarray], second: list[np.ndarray] | None, *, unbiased: bool
) -> np.ndarray:
    """Linear CKA from cross-covariances, every layer of the second set stacked side by side.

    One wide product X^T [Y_1 ... Y_m] per layer of the first set keeps BLAS far busier
    than m small ones (about twice as fast on two cores, more on many).
    """
    n = len(first[0])
    targets = first if second is None else second
    widths = [x.shape[1] for x in targets]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    stacked = np.empty((n, int(offsets[-1])), dtype=np.float64)
    prepared_b = [
        _feature_layer(x, unbiased=unbiased, out=stacked[:, offsets[j] : offsets[j + 1]])
        for j, x in enumerate(targets)
    ]
    prepared_a = (
        prepared_b if second is None else [_feature_layer(x, unbiased=unbiased) for x in first]
    )
    result = np.ones((len(prepared_a), len(prepared_b)), dtype=np.float64)
    for i, a in enumerate(prepared_a):
        start = i + 1 if second is None else 0
        for group in _column_groups(widths, start, a.features.shape[1]):
            low, high = int(offsets[group[0]]), int(offsets[group[-1] + 1])
            cross = a.features.T @ stacked[:, low:high]
            for j in group:
                block = cross[:, offsets[j] - low : offsets[j + 1] - low]
                cross_sq = float(np.einsum("ij,ij->", block, block))
                b = prepared_b[j]
                numerator = _feature_hsic(cross_sq, a.row_norms, b.row_norms, n, unbiased)
                result[i, j] = numerator / np.sqrt(a.self_hsic * b.self_hsic)
                if second is None:
                    result[j, i] = result[i, j]
    return result


def _column_groups(widths: list[int], start: int, rows: int) -> list[list[int]]:
    """Consecutive layers from ``start`` whose cross-covariance block fits the budget."""
    groups: list[list[int]] = []
    current: list[int] = []
    columns = 0
    for j in range(start, len(widths)):
        if current and (columns + widths[j]) * rows * 8 > CROSS_BLOCK_BYTES:
            groups.append(current)
            current, columns = [], 0
        current.append(j)
        columns += widths[j]
    if current:
        groups.append(current)
    return groups


def cka_matrix(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray] | None = None,
    *,
    kernel: Kernel = "linear",
    unbiased: bool = True,
    rbf_sigma: float = 1.0,
) -> np.ndarray:
    """CKA of every layer in ``layers_a`` with every layer in ``layers_b`` (or ``layers_a``).

    Returns a len(layers_a) x len(layers_b) float64 matrix. Every layer is prepared once;
    with ``layers_b`` omitted only the upper triangle is computed and the diagonal is 1.
    ``rbf_sigma`` is the bandwidth as a multiple of the median distance (RBF only).
    """
    first = _check_layers(layers_a, "layers_a")
    second = None if layers_b is None else _check_layers(layers_b, "layers_b")
    n = len(first[0])
    for label, layers in (("layers_a", first), ("layers_b", second or [])):
        for i, x in enumerate(layers):
            if len(x) != n:
                raise MetricError(
                    f"{label}[{i}] has {len(x)} stimuli but layers_a[0] has {n}; CKA compares "
                    "representations of the same stimuli, in the same order."
                )
    _check_options(kernel, unbiased, n, rbf_sigma)
    targets = first if second is None else second
    pairs = len(first) * (len(first) - 1) // 2 if second is None else len(first) * len(second)
    dims_a, dims_b = [x.shape[1] for x in first], [x.shape[1] for x in targets]
    if _use_features(kernel, n, dims_a, dims_b, pairs, shared=second is None):
        return _feature_form(first, second, unbiased=unbiased)
    options = {"kernel": kernel, "unbiased": unbiased, "rbf_sigma": rbf_sigma}
    return _gram_form(first, second, options)


def cka(
    x: np.ndarray,
    y: np.ndarray,
    *,
    kernel: Kernel = "linear",
    unbiased: bool = True,
    rbf_sigma: float = 1.0,
) -> float:
    """CKA between two representations (rows = the same stimuli; widths may differ)."""
    return float(cka_matrix([x], [y], kernel=kernel, unbiased=unbiased, rbf_sigma=rbf_sigma)[0, 0])
