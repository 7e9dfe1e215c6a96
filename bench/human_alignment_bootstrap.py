"""Stimulus-bootstrap CI of model-human RDM correlation: Likeness against rsatoolbox.

1000 stimuli (499,500 pairs), 1000 bootstrap resamples of stimuli.
Issue 3's figure: Pearson at least 50x faster than rsatoolbox's eval_bootstrap_pattern and
under 1 s; results equal to 1e-6.
Issue 20's figure: Spearman (exact re-ranking in every resample, ties averaged) at least
100x faster than rsatoolbox's eval_bootstrap_pattern, and equal to the previous exact
implementation (numpy re-ranking of every resample, kept here as a baseline) to 1e-10 on
every resample.

Both tools get the same resamples for the equality check (rsatoolbox's subsample_pattern +
compare on the stimulus draws Likeness makes); the timing runs rsatoolbox's own
eval_bootstrap_pattern with the same number of resamples, in this process, on this machine.
Spearman's compiled kernel is warmed up on a tiny input first (compiling it, or loading it
from numba's cache), so the timed run measures the bootstrap; the warm-up time is printed.

    .venv/bin/python bench/human_alignment_bootstrap.py [--stimuli 1000] [--resamples 1000]
        [--rsatoolbox-resamples N]   # fewer rsatoolbox resamples: its time is scaled per resample
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rsatoolbox

from evaluation.engine.metrics import human


def previous_spearman(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, *, n_boot: int, seed: int, n: int
) -> np.ndarray:
    """The exact Spearman bootstrap before issue 20: every resample re-ranked with numpy
    (tie groups from one argsort per variable, cumulative weights), then a weighted Pearson,
    in chunks of resamples."""
    counts = human._resample_counts(n, n_boot, seed)
    results = np.empty(n_boot)
    chunk = max(1, human.BOOTSTRAP_CHUNK_CELLS // max(1, len(x)))
    order_x, order_y = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    for start in range(0, n_boot, chunk):
        weights = human.pair_weights(counts[start : start + chunk], i, j)
        rx = human._weighted_ranks_rows(x, weights, order_x)
        ry = human._weighted_ranks_rows(y, weights, order_y)
        results[start : start + chunk] = human._weighted_pearson(rx, ry, weights)
    return results


def warm_up() -> float:
    """Seconds to compile the Spearman kernel or load it from numba's cache."""
    i, j = np.triu_indices(4, k=1)
    started = time.perf_counter()
    human.bootstrap_pair_correlations(
        i, j, np.arange(6.0), np.arange(6.0) % 2, correlation="spearman", n_boot=2, seed=0,
        n_stimuli=4,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stimuli", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--rsatoolbox-resamples", type=int, default=None)
    parser.add_argument("--check", type=int, default=10, help="resamples compared value by value")
    args = parser.parse_args()
    n, n_boot = args.stimuli, args.resamples
    rsa_boot = args.rsatoolbox_resamples or n_boot

    rng = np.random.default_rng(0)
    model_features = rng.normal(size=(n, 64))
    people = model_features[:, :16] + rng.normal(size=(n, 16))
    i, j = np.triu_indices(n, k=1)
    model_dis = np.linalg.norm(model_features[i] - model_features[j], axis=1)
    human_dis = np.round(np.linalg.norm(people[i] - people[j], axis=1), 2)  # ratings have ties
    print(f"{n} stimuli, {len(i):,} pairs, {n_boot} resamples")
    print(f"spearman kernel warm-up (compile or cache load) {warm_up():.2f} s, not timed below")

    for method, rsa_method in (("pearson", "corr"), ("spearman", "spearman")):
        started = time.perf_counter()
        ours = human.bootstrap_pair_correlations(
            i, j, model_dis, human_dis, correlation=method, n_boot=n_boot, seed=1, n_stimuli=n
        )
        ours_seconds = time.perf_counter() - started

        draws = np.random.default_rng(1).integers(0, n, size=(n_boot, n))
        worst = 0.0
        for b in range(min(args.check, n_boot)):
            a = rsatoolbox.rdm.RDMs(model_dis[None, :]).subsample_pattern("index", draws[b])
            h = rsatoolbox.rdm.RDMs(human_dis[None, :]).subsample_pattern("index", draws[b])
            worst = max(worst, abs(rsatoolbox.rdm.compare(a, h, method=rsa_method)[0, 0] - ours[b]))

        data = rsatoolbox.rdm.RDMs(human_dis[None, :], pattern_descriptors={"index": np.arange(n)})
        model = rsatoolbox.model.ModelFixed("model", rsatoolbox.rdm.RDMs(model_dis[None, :]))
        started = time.perf_counter()
        rsatoolbox.inference.eval_bootstrap_pattern(model, data, method=rsa_method, N=rsa_boot)
        rsa_seconds = (time.perf_counter() - started) * n_boot / rsa_boot

        print(
            f"{method:8s} likeness {ours_seconds:8.2f} s   rsatoolbox {rsa_seconds:8.2f} s"
            f"{' (scaled from ' + str(rsa_boot) + ' resamples)' if rsa_boot != n_boot else ''}"
            f"   speed-up {rsa_seconds / ours_seconds:6.1f}x   max |difference| {worst:.1e}"
            f" over {min(args.check, n_boot)} resamples"
        )
        if method == "spearman":
            started = time.perf_counter()
            previous = previous_spearman(i, j, model_dis, human_dis, n_boot=n_boot, seed=1, n=n)
            previous_seconds = time.perf_counter() - started
            same_nan = bool(np.array_equal(np.isnan(ours), np.isnan(previous)))
            defined = ~np.isnan(previous)
            diff = float(np.abs(ours[defined] - previous[defined]).max(initial=0.0))
            print(
                f"{method:8s} previous exact implementation {previous_seconds:8.2f} s   "
                f"speed-up {previous_seconds / ours_seconds:6.1f}x   max |difference| "
                f"{diff:.1e} over all {n_boot} resamples (NaN in the same resamples: {same_nan})"
            )


if __name__ == "__main__":
    main()
