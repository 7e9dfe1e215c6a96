"""Paired differences among a target's top models on one metric: the differences page, its
CSV and the API.

The models are the board's top rows whose scores keep the leader's bootstrap resamples (the
same stimuli drawn in every resample, see ``evaluation.engine.metrics.paired``). Every pair
gets its difference, the 95% interval of the difference and a two-sided bootstrap p-value,
Holm-adjusted over all the pairs shown. Rank intervals and tie groups are the board's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from django.http import QueryDict
from django.utils.safestring import SafeString

from core import querystring as qs
from evaluation import plots
from evaluation.engine.metrics.paired import ALPHA, PairwiseTable, pairwise_table
from evaluation.leaderboards import Board, BoardQuery, leaderboard, load_resamples
from evaluation.metrics import metric_name
from evaluation.models import Target

DIFFERENCES_DEFAULT_MODELS = 20
DIFFERENCES_MAX_MODELS = 40  # 780 pairs: the table stays readable, the heatmap legible
METHOD = (
    "paired bootstrap over stimuli (the same resamples for every model): difference of the "
    "two scores, the 95% percentile interval of its resamples, and a two-sided p-value from "
    "their standard deviation (the bootstrap standard error, normal approximation), "
    "Holm-adjusted over every pair shown (near the threshold the interval and the p-value, "
    "computed differently, can disagree)"
)


@dataclass(frozen=True)
class ComparedModel:
    model_id: int
    name: str
    layer: str
    value: float
    ci_low: float
    ci_high: float
    rank_interval: tuple[int, int] | None
    tie_group: int | None


@dataclass(frozen=True)
class Differences:
    metric: str
    models: list[ComparedModel]
    table: PairwiseTable | None
    reason: str = ""  # why there is no table
    resampling: str = ""
    method: str = METHOD

    def cell(self, i: int, j: int) -> dict[str, Any]:
        assert self.table is not None
        t = self.table
        return {
            "difference": _number(t.differences[i, j]),
            "ci": [_number(t.ci_low[i, j]), _number(t.ci_high[i, j])],
            "p": _number(t.p_values[i, j]),
            "p_holm": _number(t.adjusted[i, j]),
            "separated": bool(t.adjusted[i, j] < ALPHA),
        }

    @property
    def rows(self) -> list[tuple[ComparedModel, list[dict[str, Any] | None]]]:
        """Each model with its row of cells (None on the diagonal), for the table."""
        if self.table is None:
            return []
        n = len(self.models)
        return [
            (model, [None if i == j else self.cell(i, j) for j in range(n)])
            for i, model in enumerate(self.models)
        ]

    @property
    def labels(self) -> list[str]:
        """Each model's name, with " · layer" where a name repeats (layers=all puts one
        model on several rows)."""
        names = [m.name for m in self.models]
        return [f"{m.name} · {m.layer}" if names.count(m.name) > 1 else m.name for m in self.models]

    def heatmap(self) -> SafeString | None:
        if self.table is None:
            return None
        labels = self.labels
        n = len(labels)
        notes = [
            [
                ""
                if i == j
                else f"95% CI {self.table.ci_low[i, j]:+.3f} to {self.table.ci_high[i, j]:+.3f}, "
                f"Holm p = {self.table.adjusted[i, j]:.3g}"
                for j in range(n)
            ]
            for i in range(n)
        ]
        return plots.heatmap(
            [[float(v) for v in row] for row in self.table.differences],
            row_labels=labels,
            col_labels=labels,
            title=f"{metric_name(self.metric)}: row minus column",
            signed=True,
            notes=notes,
            value_label="difference, row model minus column model",
        )


def _number(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def board_differences(board: Board, *, top: int = DIFFERENCES_DEFAULT_MODELS) -> Differences:
    """The board's top compared rows (those on shared resamples, see
    ``leaderboards.compare_on_resamples``), at most ``top`` of them, pair by pair."""
    key = board.sort_key
    if not board.rows:
        return Differences(key, [], None, reason="No model has a score on this metric yet.")
    rows = [r for r in board.rows if r.rank_interval is not None or r.tie_group is not None]
    if len(rows) < 2:
        return Differences(
            key,
            [],
            None,
            reason=f"Fewer than two scores on {key} keep the same bootstrap resamples (the "
            "metric's interval is not a bootstrap, or the scores were computed before "
            "resamples were kept: re-score them), so no paired comparison can be made.",
        )
    rows = rows[: max(2, min(top, DIFFERENCES_MAX_MODELS))]
    samples = load_resamples([r.cells[key].score_id for r in rows])
    values = np.array([r.cells[key].value for r in rows])
    table = pairwise_table(samples, values)
    # Rank intervals and tie groups are the board's: ranks among all its compared models.
    models = [
        ComparedModel(
            r.model_id,
            r.model_name,
            r.layer,
            r.cells[key].value,
            r.cells[key].ci_low,
            r.cells[key].ci_high,
            r.rank_interval,
            r.tie_group,
        )
        for r in rows
    ]
    return Differences(key, models, table, resampling=rows[0].cells[key].resampling)


def differences_csv_rows(differences: Differences) -> list[list[Any]]:
    header = [
        "model a", "layer a", "model b", "layer b", "metric", "difference (a - b)",
        "ci_low", "ci_high", "p", "p (Holm)", "separated", "tie group a", "tie group b",
    ]  # fmt: skip
    out: list[list[Any]] = [header]
    for i, a in enumerate(differences.models):
        for j, b in enumerate(differences.models):
            if i == j:
                continue
            c = differences.cell(i, j)
            out.append(
                [
                    a.name,
                    a.layer,
                    b.name,
                    b.layer,
                    differences.metric,
                    c["difference"],
                    c["ci"][0],
                    c["ci"][1],
                    c["p"],
                    c["p_holm"],
                    c["separated"],
                    a.tie_group,
                    b.tie_group,
                ]
            )
    return out


def differences_json(differences: Differences) -> dict[str, Any]:
    """The API's shape: the models in score order, and every ordered pair."""
    return {
        "metric": differences.metric,
        "method": differences.method if differences.table is not None else "",
        "resampling": differences.resampling,
        "reason": differences.reason,
        "models": [
            {
                "model": m.model_id,
                "name": m.name,
                "layer": m.layer,
                "value": m.value,
                "ci": [m.ci_low, m.ci_high],
                "rank_interval": list(m.rank_interval) if m.rank_interval else None,
                "tie_group": m.tie_group,
            }
            for m in differences.models
        ],
        "pairs": [
            {"a": a.model_id, "b": b.model_id, **differences.cell(i, j)}
            for i, a in enumerate(differences.models)
            for j, b in enumerate(differences.models)
            if i != j
        ],
    }


# The board's view carries over to the differences page; these are the page's own parameters.
NOT_KEPT = ("sort", "page", "per_page", "metric", "top", "format")


@dataclass(frozen=True)
class DifferencesPage:
    """The differences page's state from its URL: the board's view (``query``, and ``kept``:
    its parameters that carry over), the board, the table, and ``shown``: the parameters
    that rebuild this table (for its CSV and its figure's downloads)."""

    query: BoardQuery
    board: Board
    table: Differences
    kept: list[tuple[str, str]]
    shown: list[tuple[str, str]]


def differences_page(target: Target, params: Mapping[str, Any]) -> DifferencesPage:
    """One home for reading the differences page's URL: the page, its CSV, its figure's
    downloads and the figure API all call it."""
    query = BoardQuery.from_params(cast(QueryDict, params))  # reads it with .get, as a Mapping
    metric = qs.text_param(params, "metric", max_length=200)
    top = qs.int_param(params, "top", minimum=2, maximum=DIFFERENCES_MAX_MODELS, clamp=True)
    board = leaderboard(target=target, query=replace(query, sort=metric or query.sort))
    table = board_differences(board, top=top or DIFFERENCES_DEFAULT_MODELS)
    kept = [(k, str(v)) for k, v in QueryDict(query.as_params()).items() if k not in NOT_KEPT]
    shown = [*kept, ("metric", board.sort_key), ("top", str(len(table.models) or ""))]
    return DifferencesPage(query, board, table, kept, shown)
