"""Pairwise similarities between embeddings, and representational dissimilarity matrices.

Everything is computed in float64 from inner products (one BLAS call per block), which is
far faster than scipy's pdist on wide embeddings; the price is a rounding error of about
1e-16 x the squared norms, harmless at the scales RSA works at. RDMs come back condensed:
the upper triangle row by row, the order of scipy.spatial.distance.pdist and squareform.

Rows that make a measure undefined (an all-zero row for cosine, a constant row for
correlation) raise MetricError instead of turning into NaN or a silent 0: in an RDM they
would otherwise skew every comparison that row takes part in.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.validation import embedding_matrix

SimilarityKind = Literal["cosine", "dot", "neg_euclidean", "pearson"]
RdmKind = Literal["correlation", "cosine", "euclidean"]

SIMILARITY_KINDS: tuple[str, ...] = ("cosine", "dot", "neg_euclidean", "pearson")
RDM_KINDS: tuple[str, ...] = ("correlation", "cosine", "euclidean")
ROW_BLOCK = 1024


def _prepare(x: np.ndarray, kind: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows ready for inner products (centred for Pearson), and their squared norms."""
    rows = x - x.mean(axis=1, keepdims=True) if kind == "pearson" else x
    squared_norms = np.einsum("ij,ij->i", rows, rows)
    if kind in ("cosine", "pearson"):
        # A constant row centres to rounding noise, not exactly zero: judge it against the
        # row's own size.
        floor = 1e-24 * np.einsum("ij,ij->i", x, x) if kind == "pearson" else 0.0
        flat = np.flatnonzero(squared_norms <= floor)
        if len(flat):
            problem = (
                "is constant, so its correlation"
                if kind == "pearson"
                else "is all zeros, so its cosine similarity"
            )
            raise MetricError(
                f"Row {int(flat[0])} of {name} {problem} with other stimuli is undefined "
                f"({len(flat)} such rows). Check the embeddings of those stimuli."
            )
    return rows, squared_norms


def _similarity_block(
    a: np.ndarray, norms_a: np.ndarray, b: np.ndarray, norms_b: np.ndarray, kind: str
) -> np.ndarray:
    """Similarity of prepared rows ``a`` against prepared rows ``b``."""
    products = a @ b.T
    if kind in ("cosine", "pearson"):
        # Dividing the exact-as-possible inner product once (rather than normalising rows
        # first) keeps pairs that are tied in exact arithmetic tied, which rank-based RSA
        # on integer-valued data (pixels, ratings) depends on.
        products /= np.sqrt(norms_a[:, np.newaxis] * norms_b[np.newaxis, :])
        # Rounding can push |cos| a hair past 1; clip so that 1 - s is a valid distance.
        np.clip(products, -1.0, 1.0, out=products)
        return products
    if kind == "neg_euclidean":
        squared = norms_a[:, np.newaxis] + norms_b[np.newaxis, :] - 2 * products
        np.maximum(squared, 0.0, out=squared)
        return -np.sqrt(squared)
    return products


def _check_kind(kind: str, allowed: tuple[str, ...], what: str) -> None:
    if kind not in allowed:
        raise MetricError(f"Unknown {what} {kind!r}; choose one of {', '.join(allowed)}.")


def pairwise_similarity(
    x: np.ndarray, y: np.ndarray | None = None, *, kind: SimilarityKind
) -> np.ndarray:
    """Similarity of every row of ``x`` to every row of ``y`` (or of ``x``), float64.

    ``cosine`` and ``pearson`` (row-wise correlation) lie in [-1, 1]; ``dot`` is the raw
    inner product; ``neg_euclidean`` is minus the Euclidean distance, so that larger is
    more similar for every kind. Pass a block of rows as ``x`` to bound memory.
    """
    _check_kind(kind, SIMILARITY_KINDS, "similarity")
    a, norms_a = _prepare(embedding_matrix(x, name="x"), kind, "x")
    if y is None:
        b, norms_b = a, norms_a
    else:
        b, norms_b = _prepare(embedding_matrix(y, name="y"), kind, "y")
        if b.shape[1] != a.shape[1]:
            raise MetricError(
                f"x has {a.shape[1]} features but y has {b.shape[1]}; "
                "similarities need embeddings of the same space."
            )
    return _similarity_block(a, norms_a, b, norms_b, kind)


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Entries above the diagonal, row by row: scipy's condensed (pdist) order."""
    array = np.asarray(matrix)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise MetricError(f"Expected a square matrix; got shape {array.shape}.")
    rows, cols = np.triu_indices(array.shape[0], k=1)
    return array[rows, cols]


def condensed_size(n_stimuli: int) -> int:
    return n_stimuli * (n_stimuli - 1) // 2


def rdm(x: np.ndarray, *, kind: RdmKind = "correlation") -> np.ndarray:
    """Condensed RDM of the rows of ``x``, equal to ``pdist(x, metric=kind)``.

    ``correlation`` is 1 - Pearson r and ``cosine`` 1 - cos (both in [0, 2]);
    ``euclidean`` is the Euclidean distance. Built in blocks of rows, so the full square
    matrix is never held: memory is one block plus the condensed vector.
    """
    _check_kind(kind, RDM_KINDS, "RDM kind")
    array = embedding_matrix(x, name="x", min_rows=3)
    similarity_kind = {"correlation": "pearson", "cosine": "cosine", "euclidean": "neg_euclidean"}
    sim_kind = similarity_kind[kind]
    prepared, norms = _prepare(array, sim_kind, "x")
    n = len(prepared)
    out = np.empty(condensed_size(n), dtype=np.float64)
    position = 0
    for start in range(0, n - 1, ROW_BLOCK):
        stop = min(start + ROW_BLOCK, n - 1)
        block = _similarity_block(
            prepared[start:stop], norms[start:stop], prepared[start:], norms[start:], sim_kind
        )
        # Row i of the block holds columns start..n-1; keep those right of the diagonal.
        above = np.arange(n - start)[np.newaxis, :] > np.arange(stop - start)[:, np.newaxis]
        values = block[above]
        out[position : position + len(values)] = values
        position += len(values)
    if kind == "euclidean":
        np.negative(out, out=out)
    else:
        np.subtract(1.0, out, out=out)
    return out
