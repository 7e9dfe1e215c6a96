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
picks whichever form costs fewer operations, and both give the same value.

The RBF bandwidth follows Kornblith et al.'s published code: sigma^2 = factor^2 x the
median squared distance over all n^2 pairs, diagonal zeros included, so values can be
compared with theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.similarity import as_matrix

Kernel = Literal["linear", "rbf"]
KERNELS: tuple[str, ...] = ("linear", "rbf")
# A self-HSIC this small relative to the raw kernel's size is rounding noise: the
# representation does not vary across stimuli.
DEGENERATE = 1e-12


@dataclass(frozen=True)
class _Prepared:
    """One representation, reduced to what every HSIC with it needs."""

    gram: np.ndarray | None  # H K H (biased) or U-centred K (unbiased); None in feature form
    features: np.ndarray | None  # column-centred X, for the linear feature form
    row_norms: np.ndarray | None  # squared norms of the centred rows (feature form)
    self_hsic: float


def _check_layers(layers: Sequence[np.ndarray], label: str) -> list[np.ndarray]:
    if len(layers) == 0:
        raise MetricError(f"{label} is empty: CKA needs at least one representation.")
    return [as_matrix(x, name=f"{label}[{i}]") for i, x in enumerate(layers)]


def _check_options(kernel: str, unbiased: bool, n: int, rbf_sigma: float) -> None:
    if kernel not in KERNELS:
        raise MetricError(f"Unknown CKA kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
    minimum = 4 if unbiased else 3
    if n < minimum:
        raise MetricError(
            f"CKA over {n} stimuli is not meaningful; the "
            f"{'unbiased' if unbiased else 'biased'} estimator needs at least {minimum}."
        )
    if not rbf_sigma > 0:
        raise MetricError(f"The RBF bandwidth factor must be positive; got {rbf_sigma}.")


def _use_features(kernel: str, n: int, dims_a: list[int], dims_b: list[int], pairs: int) -> bool:
    """Whether the linear feature form costs fewer multiply-adds than the Gram form."""
    if kernel != "linear":
        return False
    dims = dims_a + dims_b
    gram_cost = n * n * sum(dims) + pairs * n * n
    mean_cross = (sum(dims_a) / len(dims_a)) * (sum(dims_b) / len(dims_b))
    feature_cost = n * sum(d * d for d in dims) + pairs * n * mean_cross
    return feature_cost < gram_cost


def _kernel_matrix(x: np.ndarray, kernel: str, rbf_sigma: float) -> np.ndarray:
    centred = x - x.mean(axis=0)
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
    """H K H."""
    centred = k - k.mean(axis=0, keepdims=True)
    centred -= centred.mean(axis=1, keepdims=True)
    return centred


def _u_centre(k: np.ndarray) -> np.ndarray:
    """U-centred K: its inner product with another over n (n - 3) is Song et al.'s HSIC."""
    n = len(k)
    zeroed = k.copy()
    np.fill_diagonal(zeroed, 0.0)
    row_sums = zeroed.sum(axis=1)
    total = row_sums.sum()
    zeroed -= row_sums[:, np.newaxis] / (n - 2)
    zeroed -= row_sums[np.newaxis, :] / (n - 2)
    zeroed += total / ((n - 1) * (n - 2))
    np.fill_diagonal(zeroed, 0.0)
    return zeroed


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


def _prepare(
    x: np.ndarray, *, kernel: str, unbiased: bool, rbf_sigma: float, features: bool
) -> _Prepared:
    n = len(x)
    # Measured on the raw embeddings: centring a constant one leaves only rounding noise,
    # which would otherwise look like signal at its own scale.
    scale = float(np.einsum("ij,ij->", x, x)) ** 2 if kernel == "linear" else float(n * n)
    if features:
        centred = x - x.mean(axis=0)
        norms = np.einsum("ij,ij->i", centred, centred)
        self_cross = float(np.sum((centred.T @ centred) ** 2))
        self_hsic = _feature_hsic(self_cross, norms, norms, n, unbiased)
        prepared = _Prepared(gram=None, features=centred, row_norms=norms, self_hsic=self_hsic)
    else:
        k = _kernel_matrix(x, kernel, rbf_sigma)
        gram = _u_centre(k) if unbiased else _double_centre(k)
        self_hsic = float(np.vdot(gram, gram))
        prepared = _Prepared(gram=gram, features=None, row_norms=None, self_hsic=self_hsic)
    if not self_hsic > DEGENERATE * scale:
        raise MetricError(
            "A representation is (nearly) constant across the stimuli, so its CKA with "
            "anything is undefined."
        )
    return prepared


def _pair_cka(a: _Prepared, b: _Prepared, n: int, unbiased: bool) -> float:
    if a.gram is not None and b.gram is not None:
        numerator = float(np.vdot(a.gram, b.gram))
    else:
        assert a.features is not None and b.features is not None
        assert a.row_norms is not None and b.row_norms is not None
        cross_sq = float(np.sum((a.features.T @ b.features) ** 2))
        numerator = _feature_hsic(cross_sq, a.row_norms, b.row_norms, n, unbiased)
    return numerator / np.sqrt(a.self_hsic * b.self_hsic)


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
    same = layers_b is None
    first = _check_layers(layers_a, "layers_a")
    second = first if same else _check_layers(layers_b or [], "layers_b")
    n = len(first[0])
    for label, layers in (("layers_a", first), ("layers_b", second)):
        for i, x in enumerate(layers):
            if len(x) != n:
                raise MetricError(
                    f"{label}[{i}] has {len(x)} stimuli but layers_a[0] has {n}; CKA compares "
                    "representations of the same stimuli, in the same order."
                )
    _check_options(kernel, unbiased, n, rbf_sigma)
    pairs = len(first) * (len(first) - 1) // 2 if same else len(first) * len(second)
    features = _use_features(
        kernel, n, [x.shape[1] for x in first], [x.shape[1] for x in second], pairs
    )

    def prepare(x: np.ndarray) -> _Prepared:
        return _prepare(x, kernel=kernel, unbiased=unbiased, rbf_sigma=rbf_sigma, features=features)

    prepared_a = [prepare(x) for x in first]
    prepared_b = prepared_a if same else [prepare(x) for x in second]
    result = np.empty((len(prepared_a), len(prepared_b)), dtype=np.float64)
    for i, a in enumerate(prepared_a):
        if same:
            result[i, i] = 1.0
            for j in range(i + 1, len(prepared_b)):
                result[i, j] = result[j, i] = _pair_cka(a, prepared_b[j], n, unbiased)
        else:
            for j, b in enumerate(prepared_b):
                result[i, j] = _pair_cka(a, b, n, unbiased)
    return result


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
