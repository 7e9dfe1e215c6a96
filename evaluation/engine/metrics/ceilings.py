"""Noise ceilings of human judgments as a lower and an upper bound, with bootstrap CIs.

The split-half reliability in ``human.py`` gives the one ceiling scores are divided by. This
module gives the bracket of Nili et al. (2014, "A toolbox for representational similarity
analysis", PLoS Comput Biol 10: e1003553) beside it: the true model's expected score lies
between a *lower* bound (each participant predicted by the mean of the others, a score the
true model is expected to reach or exceed) and an *upper* bound (each participant predicted
by the mean of everyone including themselves, which overfits to that participant and which
even the true model is not expected to exceed).

Pair ratings (``nili_bounds``) follow rsatoolbox's ``boot_noise_ceiling`` and ``pool_rdm``
and need participant ids; choices (``choice_bounds``: triplets, 2AFC) use the analogous
majority agreement per response.

The confidence intervals resample participants (items for choices without participant ids)
with replacement and average the per-participant (per-response) values of the full data
over each resample. They do not recompute the references inside a resample, as rsatoolbox's
``eval_bootstrap_rdm`` does: a resample holds only about 63% distinct people, so each
reference rests on fewer of them and a drawn-twice person's copies agree perfectly with each
other; the resampled bounds then drift outward, far enough to leave the estimate outside its
own interval (simulated: 300 participants each rating 100 of 5,000 pairs, lower bound 0.529,
recomputed-reference interval [0.466, 0.493]; THINGS odd-one-out, upper bound 0.672, median
of recomputed resamples 0.688).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.validation import (
    at_least,
    finite_values,
    one_of,
    same_lengths,
    stimulus_indices,
)

CORRELATIONS = ("pearson", "spearman")
MIN_PARTICIPANTS = 3
MIN_SHARED_PAIRS = 3  # a correlation over fewer pairs says nothing
MIN_BOOT = 10
MIN_DEFINED_RESAMPLES = 10  # fewer defined resamples give no interval
CONFIDENCE = 0.95
CHUNK_CELLS = 5_000_000  # resamples x units held in memory at once
# Averaged ranks that are equal in exact arithmetic can differ in the last bits, depending on
# the order of summation; rounding keeps such ties tied (distinct means differ by far more).
TIE_DECIMALS = 12

PAIR_METHOD = "Nili et al. 2014: leave-one-participant-out (lower) and all-participant mean (upper)"
CHOICE_METHOD = (
    "Nili et al. 2014, for choices: majority of the other responses to the item (lower) and "
    "of all its responses (upper)"
)
PAIR_CI_METHOD = (
    f"percentile bootstrap over participants ({CONFIDENCE:.0%}): resampled means of the "
    "participants' correlations with the full data's references"
)


def _choice_ci_method(unit: str) -> str:
    return (
        f"percentile bootstrap over {unit} ({CONFIDENCE:.0%}): resampled means of the "
        "responses' agreement with the full data's majorities"
    )


def _cannot(reason: str) -> dict[str, Any]:
    """What the data cannot support, said as ``split_half_reliability`` says it."""
    return {"lower": None, "upper": None, "reason": reason}


def _participant_ids(participants: Sequence[Any] | None, n: int) -> np.ndarray | None:
    """Participant ids as strings (blank for none); None when no entry names one."""
    if participants is None:
        return None
    same_lengths(judgments=range(n), participants=participants)
    ids = np.array(["" if p is None else str(p) for p in participants], dtype=str)
    return ids if (ids != "").any() else None


def _bootstrap_means(
    numerators: Sequence[np.ndarray], denominator: np.ndarray, *, n_boot: int, seed: int
) -> list[np.ndarray]:
    """Resampled ratios sum(numerator) / sum(denominator) over units drawn with replacement
    (one numerator and denominator per unit), for each numerator: n_boot values each."""
    n = len(denominator)
    rng = np.random.default_rng(seed)
    samples = [np.empty(n_boot) for _ in numerators]
    step = max(1, CHUNK_CELLS // n)
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        draws = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
        drawn = counts @ denominator
        with np.errstate(invalid="ignore", divide="ignore"):
            for sample, numerator in zip(samples, numerators, strict=True):
                sample[start : start + rows] = counts @ numerator / drawn
    return samples


def _interval(samples: np.ndarray) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if len(finite) < MIN_DEFINED_RESAMPLES:
        return None
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return [float(low), float(high)]


# --- Pair ratings -----------------------------------------------------------------------------
def nili_bounds(
    a: Any,
    b: Any,
    values: Any,
    participants: Sequence[Any] | None,
    *,
    correlation: str = "spearman",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Lower and upper noise-ceiling bounds of pair ratings (Nili et al. 2014), with CIs.

    For participant s, let P_s be the pairs s rated that at least one other participant
    rated too:

    - each participant's ratings are first put on a common scale over all the (non-catch)
      pairs they rated, as rsatoolbox's ``pool_rdm`` does before averaging: z-scores
      (population SD) for ``"pearson"``; for ``"spearman"`` ranks (ties averaged), here as
      fractions ``(rank - 0.5) / n_s`` of the n_s pairs s rated, so that participants who
      rated different numbers of pairs share a scale;
    - the reference of a pair is the mean of these scaled ratings over the participants who
      rated it: all of them for the upper bound, all but s for the lower bound;
    - r_s is the Pearson or Spearman correlation over P_s between s's own mean rating of each
      pair and the reference; the upper bound is the mean of r_s with the all-participant
      reference, the lower bound the mean of r_s with the leave-s-out reference, over the
      participants with at least 3 pairs in P_s and both correlations defined.

    With complete data (everyone rates every pair once) this scale differs from rsatoolbox's
    raw ranks by one affine map for all participants, so both bounds equal
    ``rsatoolbox.inference.boot_noise_ceiling`` with method ``"corr"`` or ``"spearman"``.

    Catch trials (a == b) are left out; pairs are unordered; a participant's repeated
    ratings of a pair are averaged; rows without a participant id are left out; so is a
    participant whose ratings are all equal (their correlations are undefined).
    ``participants_skipped`` counts those and the participants with fewer than 3 pairs in
    P_s or ratings constant over them (they still count in the others' references). The CIs
    resample the used participants with replacement and average their r_s (see the module
    docstring for why the references stay those of the full data).

    Returns ``{"lower": None, "upper": None, "reason": ...}`` when the data cannot support
    the bounds (no participant ids, fewer than 3 usable participants).
    """
    one_of(correlation, CORRELATIONS, name="correlation")
    at_least(n_boot, MIN_BOOT, name="n_boot")
    a_arr = stimulus_indices(a, name="a")
    b_arr = stimulus_indices(b, name="b")
    v = finite_values(values, name="values")
    same_lengths(a=a_arr, b=b_arr, values=v)
    ids = _participant_ids(participants, len(v))
    if ids is None:
        return _cannot(
            "the ratings name no participants; the Nili et al. bounds compare each "
            "participant with the others."
        )
    keep = (a_arr != b_arr) & (ids != "")
    named = len(np.unique(ids[keep]))
    cells = _participant_pair_means(a_arr[keep], b_arr[keep], v[keep], ids[keep])
    constant = named - cells.n_participants
    if cells.n_participants < MIN_PARTICIPANTS:
        return _cannot(
            f"only {cells.n_participants} participant(s) gave ratings that vary; the bounds "
            f"need at least {MIN_PARTICIPANTS}."
        )
    r_lower, r_upper, shared = _participant_correlations(cells, correlation)
    valid = (shared >= MIN_SHARED_PAIRS) & np.isfinite(r_lower) & np.isfinite(r_upper)
    used = int(valid.sum())
    if used < MIN_PARTICIPANTS:
        return _cannot(
            f"only {used} participant(s) rated {MIN_SHARED_PAIRS} or more pairs that others "
            f"rated too (with ratings that vary over them); the bounds need at least "
            f"{MIN_PARTICIPANTS}."
        )
    lower_boot, upper_boot = _bootstrap_means(
        [r_lower[valid], r_upper[valid]], np.ones(used), n_boot=n_boot, seed=seed
    )
    return {
        "lower": float(r_lower[valid].mean()),
        "lower_ci": _interval(lower_boot),
        "upper": float(r_upper[valid].mean()),
        "upper_ci": _interval(upper_boot),
        "participants": used,
        "participants_skipped": {
            "constant_ratings": constant,
            "too_few_shared_pairs": cells.n_participants - used,
        },
        "pairs": int((np.bincount(cells.pair) >= 2).sum()),
        "method": PAIR_METHOD,
        "correlation": correlation,
        "ci_method": PAIR_CI_METHOD,
        "n_boot": n_boot,
        "seed": seed,
    }


@dataclass(frozen=True)
class _PairCells:
    """One entry per participant and pair they rated, sorted by participant: the participant
    (0..n-1), the pair, the participant's mean rating of it."""

    person: np.ndarray
    pair: np.ndarray
    value: np.ndarray
    n_participants: int


def _participant_pair_means(
    a: np.ndarray, b: np.ndarray, v: np.ndarray, ids: np.ndarray
) -> _PairCells:
    """Each participant's mean rating of each unordered pair; participants whose ratings
    are all equal are left out."""
    if len(v) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _PairCells(empty, empty, np.zeros(0), 0)
    _, pair = np.unique(
        np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0, return_inverse=True
    )
    _, person = np.unique(ids, return_inverse=True)
    keys, cell = np.unique(np.stack([person.ravel(), pair.ravel()], 1), axis=0, return_inverse=True)
    cell = cell.ravel()
    mean = np.bincount(cell, weights=v) / np.bincount(cell)
    cell_person, cell_pair = keys[:, 0], keys[:, 1]  # sorted by participant, then pair
    starts = np.flatnonzero(np.r_[True, cell_person[1:] != cell_person[:-1]])
    varies = np.maximum.reduceat(mean, starts) > np.minimum.reduceat(mean, starts)
    kept = cell_person[starts][varies]
    keep = np.isin(cell_person, kept)
    return _PairCells(
        np.searchsorted(kept, cell_person[keep]), cell_pair[keep], mean[keep], len(kept)
    )


def _common_scale(cells: _PairCells, correlation: str) -> np.ndarray:
    """Each participant's ratings as z-scores (pearson) or fractional ranks (spearman)."""
    n = np.bincount(cells.person, minlength=cells.n_participants).astype(np.float64)
    if correlation == "spearman":
        return (_grouped_ranks(cells.value, cells.person) - 0.5) / n[cells.person]
    mean = np.bincount(cells.person, weights=cells.value) / n
    deviation = cells.value - mean[cells.person]
    sd = np.sqrt(np.bincount(cells.person, weights=deviation**2) / n)
    return deviation / sd[cells.person]


def _participant_correlations(
    cells: _PairCells, correlation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per participant: r with the leave-one-out reference, r with the all-participant
    reference, and the number of pairs they share with others (P_s)."""
    scaled = _common_scale(cells, correlation)
    raters = np.bincount(cells.pair)
    shared = raters[cells.pair] >= 2
    person, pair, own = cells.person[shared], cells.pair[shared], scaled[shared]
    total = np.bincount(pair, weights=own, minlength=len(raters))[pair]
    count = raters[pair].astype(np.float64)
    upper_ref = total / count
    lower_ref = (total - own) / (count - 1)
    r_lower = _grouped_correlation(own, lower_ref, person, cells.n_participants, correlation)
    r_upper = _grouped_correlation(own, upper_ref, person, cells.n_participants, correlation)
    return r_lower, r_upper, np.bincount(person, minlength=cells.n_participants)


def _grouped_correlation(
    x: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int, correlation: str
) -> np.ndarray:
    """The correlation of x and y within each group (NaN where undefined)."""
    if correlation == "spearman":
        x = _grouped_ranks(x, group)
        y = _grouped_ranks(np.round(y, TIE_DECIMALS), group)
    n = np.bincount(group, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Two passes (means, then deviations) keep the sums of squares from cancelling.
        dx = x - (np.bincount(group, weights=x, minlength=n_groups) / n)[group]
        dy = y - (np.bincount(group, weights=y, minlength=n_groups) / n)[group]
        covariance = np.bincount(group, weights=dx * dy, minlength=n_groups)
        spread = np.bincount(group, weights=dx * dx, minlength=n_groups) * np.bincount(
            group, weights=dy * dy, minlength=n_groups
        )
        return covariance / np.sqrt(spread)


def _grouped_ranks(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` within each group, ties averaged (as scipy's rankdata)."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((values, group))
    sorted_values, sorted_group = values[order], group[order]
    group_change = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
    new_run = group_change | np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], n] - 1
    first_of_group = np.maximum.accumulate(np.where(group_change, np.arange(n), 0))
    ranks = np.empty(n)
    ranks[order] = (run_start[run] + run_end[run]) / 2 - first_of_group + 1
    return ranks


# --- Choices ------------------------------------------------------------------------------------
def choice_bounds(
    item_keys: Any,
    choices: Any,
    participants: Sequence[Any] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Lower and upper noise-ceiling bounds of choice data (triplets, 2AFC), with CIs.

    ``item_keys``: one row per response naming its item (an unordered triplet, or a reference
    and an unordered pair); ``choices``: what the response picked. Only items with two or
    more responses count. Each response earns credit for agreeing with its item's majority
    choice, 1/k when it is one of k tied choices:

    - lower bound: the majority of the *other* responses to the item (the leave-one-out
      agreement of ``human.leave_one_out_agreement``, the ceiling scores are divided by);
    - upper bound: the majority of *all* its responses, the response itself included;

    each the mean credit over responses.

    The CIs resample *participants* where every counted response names one (at least 3 of
    them): the bounds say how far people agree, so people are the population they
    generalise over, and one person's responses are not independent (attentive or careless,
    their own taste). Without participant ids they resample *items*; ``ci_method`` says
    which. Either way a resample averages the responses' credits of the full data (see the
    module docstring).
    """
    at_least(n_boot, MIN_BOOT, name="n_boot")
    keys = np.asarray(item_keys)
    choice = np.asarray(choices)
    if choice.ndim != 1:
        raise MetricError(f"choices must hold one choice per response; got shape {choice.shape}.")
    same_lengths(item_keys=keys, choices=choice)
    ids = _participant_ids(participants, len(choice))
    lower, upper, item, counted = _choice_credit(keys, choice)
    if len(item) == 0:
        return _cannot("no item has two or more responses.")
    unit_ids = ids[counted] if ids is not None else None
    if unit_ids is not None and (unit_ids != "").all() and len(np.unique(unit_ids)) >= 3:
        unit_name = "participants"
        _, unit = np.unique(unit_ids, return_inverse=True)
        unit = unit.ravel()
    else:
        unit_name, unit = "items", item
    n_units = int(unit.max()) + 1
    lower_boot, upper_boot = _bootstrap_means(
        [
            np.bincount(unit, weights=lower, minlength=n_units),
            np.bincount(unit, weights=upper, minlength=n_units),
        ],
        np.bincount(unit, minlength=n_units).astype(np.float64),
        n_boot=n_boot,
        seed=seed,
    )
    result: dict[str, Any] = {
        "lower": float(lower.mean()),
        "lower_ci": _interval(lower_boot),
        "upper": float(upper.mean()),
        "upper_ci": _interval(upper_boot),
        "responses": len(item),
        "items": int(item.max()) + 1,
        "method": CHOICE_METHOD,
        "tie_rule": "a response among k tied majority choices earns 1/k",
        "ci_method": _choice_ci_method(unit_name),
        "n_boot": n_boot,
        "seed": seed,
    }
    if unit_name == "participants":
        result["participants"] = n_units
    return result


def _choice_credit(
    keys: np.ndarray, choice: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per response to an item with two or more responses: its credit against the majority
    of the other responses and against the majority of all, its item (0..items-1); and the
    mask of the responses counted."""
    if len(choice) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    _, item = np.unique(keys, return_inverse=True, axis=0 if keys.ndim > 1 else None)
    item = item.ravel()
    counted = np.bincount(item)[item] >= 2
    if not counted.any():
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), counted
    _, item = np.unique(item[counted], return_inverse=True)
    _, option = np.unique(choice[counted], return_inverse=True)
    item, option = item.ravel(), option.ravel()
    # Each item's chosen options as slots 0..k-1, so the table of votes is items x k, not
    # items x every option.
    cells, cell = np.unique(np.stack([item, option], 1), axis=0, return_inverse=True)
    first_of_item = np.searchsorted(cells[:, 0], cells[:, 0])
    slot = (np.arange(len(cells)) - first_of_item)[cell.ravel()]
    votes = np.zeros((int(item.max()) + 1, int(slot.max()) + 1))
    np.add.at(votes, (item, slot), 1)
    all_votes = votes[item]
    others = all_votes.copy()
    others[np.arange(len(item)), slot] -= 1
    return _majority_credit(others, slot), _majority_credit(all_votes, slot), item, counted


def _majority_credit(votes: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """1/k where the response's choice is one of the k most voted options, else 0."""
    is_mode = votes == votes.max(axis=1, keepdims=True)
    return is_mode[np.arange(len(slot)), slot] / is_mode.sum(axis=1)
