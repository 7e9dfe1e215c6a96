"""Layer x layer CKA: one cka_matrix call against 144 separate cka() calls.

Issue 3's figure: 12 x 12 layers of 5000 x 768, unbiased linear CKA, at least 2x faster
than calling a reference CKA 144 times; the same values. The baseline is Likeness's own
single-pair cka() (already the cheaper feature-space form), so the ratio measures what
preparing each layer once buys.

    .venv/bin/python bench/cka_layers.py [--layers 12] [--stimuli 5000] [--dim 768]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from evaluation.engine.metrics.cka import cka, cka_matrix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--stimuli", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Layers of one network drift gradually: each is the previous one plus new noise.
    layers = [rng.normal(size=(args.stimuli, args.dim))]
    for _ in range(args.layers - 1):
        layers.append(
            layers[-1] @ rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
            + 0.5 * rng.normal(size=(args.stimuli, args.dim))
        )

    started = time.perf_counter()
    matrix = cka_matrix(layers, layers)
    matrix_seconds = time.perf_counter() - started

    started = time.perf_counter()
    pairwise = np.array([[cka(a, b) for b in layers] for a in layers])
    pairwise_seconds = time.perf_counter() - started

    print(
        f"{args.layers} x {args.layers} layers of {args.stimuli} x {args.dim}, unbiased linear CKA"
    )
    print(
        f"{args.layers**2} cka() calls {pairwise_seconds:7.1f} s   cka_matrix {matrix_seconds:7.1f} s   "
        f"speed-up {pairwise_seconds / matrix_seconds:5.2f}x (target >= 2)   "
        f"max |difference| {np.abs(matrix - pairwise).max():.1e}"
    )


if __name__ == "__main__":
    main()
