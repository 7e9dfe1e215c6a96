"""Multi-arrangement: how well a session at the app's settings recovers a known matrix.

Issue 22's figure: simulated arrangements made from a known dissimilarity matrix (classical
MDS of the shown subset plus placement noise, filling the arena) must be recovered with a
correlation above 0.95 at moderate noise, falling as noise grows. Each session runs as the
app runs it (annotation.services.arrangements): the first trial shows every item, later
trials show lift-the-weakest subsets of at most half the session, until every pair has the
study's default evidence threshold or the default number of trials is done.

Baselines measured in the same run on the same simulated participants: the first trial
alone, and the same number of later trials on random subsets of the same sizes (what the
lift-the-weakest rule buys). Truth: distances between points drawn from a 5-D Gaussian.

    .venv/bin/python bench/arrangement_recovery.py [--items 20 40] [--noise 0.1 0.3 0.6] [--seeds 5]
        [--threshold T]
"""

from __future__ import annotations

import argparse
import os
import time

import django
import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("SECRET_KEY", "bench")
django.setup()

from annotation.models import Study  # noqa: E402
from annotation.services.arrangements import subset_size  # noqa: E402
from evaluation.engine.arrangement import (  # noqa: E402
    estimate_dissimilarities,
    evidence_sufficient,
    next_subset,
    pair_evidence,
    simulate_arrangement,
)

DEFAULT_THRESHOLD = Study._meta.get_field("evidence_threshold").default
MAX_TRIALS = Study._meta.get_field("trials_per_session").default

Trials = list[tuple[list[int], np.ndarray]]


def lift_the_weakest(
    truth: np.ndarray, noise: float, rng: np.random.Generator, threshold: float
) -> Trials:
    everything = list(range(len(truth)))
    trials: Trials = [(everything, simulate_arrangement(truth, everything, noise, rng))]
    while len(trials) < MAX_TRIALS:
        evidence = pair_evidence(len(truth), trials)
        if evidence_sufficient(evidence, threshold):
            break
        subset = next_subset(evidence, max_items=subset_size(len(truth)), threshold=threshold)
        trials.append((subset, simulate_arrangement(truth, subset, noise, rng)))
    return trials


def random_subsets(truth: np.ndarray, noise: float, sizes: list[int], rng) -> Trials:
    everything = list(range(len(truth)))
    trials: Trials = [(everything, simulate_arrangement(truth, everything, noise, rng))]
    for size in sizes:
        subset = sorted(rng.choice(len(truth), size=size, replace=False).tolist())
        trials.append((subset, simulate_arrangement(truth, subset, noise, rng)))
    return trials


def correlation(truth: np.ndarray, trials: Trials) -> float:
    estimate = estimate_dissimilarities(len(truth), trials).dissimilarities
    upper = np.triu_indices(len(truth), k=1)
    seen = ~np.isnan(estimate[upper])
    return float(pearsonr(estimate[upper][seen], truth[upper][seen])[0])


def spread(values: list[float]) -> str:
    """Mean ± SD over the seeds (each seed a different truth and participant; the ratio is
    taken per seed, on the same truth)."""
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    print(f"evidence threshold {args.threshold}, at most {MAX_TRIALS} trials per session")
    print(
        "items  noise  lift-the-weakest r  first trial r   random subsets r  "
        "ratio vs random  trials  estimate ms   (r: mean ± SD over seeds)"
    )
    for n_items in args.items:
        for noise in args.noise:
            adaptive, first, random, trials_used, seconds = [], [], [], [], []
            for seed in range(args.seeds):
                truth = squareform(pdist(np.random.default_rng(seed).normal(size=(n_items, 5))))
                trials = lift_the_weakest(
                    truth, noise, np.random.default_rng(1000 + seed), args.threshold
                )
                started = time.perf_counter()
                adaptive.append(correlation(truth, trials))
                seconds.append(time.perf_counter() - started)
                first.append(correlation(truth, trials[:1]))
                sizes = [len(items) for items, _ in trials[1:]]
                random.append(
                    correlation(
                        truth, random_subsets(truth, noise, sizes, np.random.default_rng(seed))
                    )
                )
                trials_used.append(len(trials))
            print(
                f"{n_items:5d}  {noise:5.2f}  {spread(adaptive):>18}  {spread(first):>14}  "
                f"{spread(random):>16}  {spread(list(np.divide(adaptive, random))):>15}  "
                f"{min(trials_used):2d}-{max(trials_used):<2d}    {1000 * np.median(seconds):8.1f}"
            )


if __name__ == "__main__":
    main()
