"""k-NN classification: Likeness against scikit-learn's brute-force cosine k-NN.

Issue 3's figure: 10k training x 2k query embeddings of 768 dimensions; Likeness at least
as fast as KNeighborsClassifier(metric="cosine", algorithm="brute"), with identical
predictions. Both get float64 inputs (Likeness computes distances in float64 whatever the
input, so that neighbour order does not depend on batching).

    .venv/bin/python bench/knn_vs_sklearn.py [--train 10000] [--query 2000] [--dim 768] [--k 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from evaluation.engine.metrics.knn import knn_predict


def best_of(repeats: int, run):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--query", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim))
    train_y = rng.integers(0, args.classes, args.train)
    query_y = rng.integers(0, args.classes, args.query)
    train_x = centres[train_y] + 2.0 * rng.normal(size=(args.train, args.dim))
    query_x = centres[query_y] + 2.0 * rng.normal(size=(args.query, args.dim))

    sklearn_seconds, reference = best_of(
        args.repeats,
        lambda: (
            KNeighborsClassifier(n_neighbors=args.k, metric="cosine", algorithm="brute")
            .fit(train_x, train_y)
            .predict(query_x)
        ),
    )
    ours_seconds, ours = best_of(
        args.repeats,
        lambda: knn_predict(train_x, train_y, query_x, k=args.k, n_classes=args.classes),
    )
    identical = np.array_equal(ours, reference)
    print(
        f"{args.train} train x {args.query} queries x {args.dim} dims, k={args.k} (best of {args.repeats})"
    )
    print(
        f"scikit-learn {sklearn_seconds:6.2f} s   likeness {ours_seconds:6.2f} s   "
        f"speed-up {sklearn_seconds / ours_seconds:5.2f}x   identical predictions: {identical}"
    )


if __name__ == "__main__":
    main()
