"""Leaderboards: one per target (models x metrics) and one across targets.

The view's whole state (sort, order, filters, layer choice, page) is a ``BoardQuery`` read from
and written back to the URL, so a filtered view can be shared. Boards are computed from
plain ``values()`` rows in two queries and cached under a key that changes whenever a
score on the target changes, so repeated views cost one small query. The page caches the
rendered board under the same key: rendering 500 rows costs far more than computing them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar
from urllib.parse import urlencode

import numpy as np
import scipy.stats
from django.core.cache import cache
from django.db.models import Count, Max, Q
from django.http import QueryDict

from core import querystring as qs
from evaluation.engine.metrics.paired import (
    ALPHA,
    TIE_GROUPS_RULE,
    holm,
    p_values_against,
    rank_intervals,
    tie_groups,
)
from evaluation.metrics import CHANCE, METRICS, Chance, metric_family_name, metric_name
from evaluation.models import (
    REVISION_FIELDS,
    HumanJudgments,
    Judgment,
    PretrainedModel,
    Run,
    RunStatus,
    Score,
    Target,
    model_revision_key,
    resamples_from_bytes,
)
from evaluation.provenance import Recorded, stale_reasons
from evaluation.selectors import MADE_BY_PEOPLE

LAYER_CHOICES = ("best", "default", "all")
T = TypeVar("T")
CACHE_SECONDS = 600
# A page of 500 rows weighs over half a megabyte; the default page shows the top 100.
PAGE_SIZES = (25, 50, 100, 250)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE = 10**9  # a page past the last shows the last page
MAX_PARAMETERS = 10**15  # more than any model has: a larger size filter means the same


@dataclass(frozen=True)
class BoardQuery:
    sort: str = ""  # a metric key; the first metric when empty or unknown
    order: str = "desc"
    layers: str = "best"  # best layer per model, the model's default layer, or every layer
    modality: str = ""
    source: str = ""
    min_params: int | None = None
    max_params: int | None = None
    q: str = ""  # model name contains
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE  # 0: every row on one page

    @classmethod
    def from_params(cls, params: QueryDict | dict[str, str]) -> BoardQuery:
        """Read the URL; values that make no sense fall back to the defaults
        (core/querystring.py: a shared link must never break the page)."""
        return cls(
            sort=qs.text_param(params, "sort", max_length=200),
            order=qs.choice_param(params, "order", ("asc", "desc"), "desc"),
            layers=qs.choice_param(params, "layers", LAYER_CHOICES, "best"),
            modality=qs.text_param(params, "modality", max_length=20),
            source=qs.text_param(params, "source", max_length=40),
            min_params=qs.int_param(
                params, "min_params", minimum=0, maximum=MAX_PARAMETERS, clamp=True
            ),
            max_params=qs.int_param(
                params, "max_params", minimum=0, maximum=MAX_PARAMETERS, clamp=True
            ),
            q=qs.text_param(params, "q", max_length=100),
            page=qs.int_param(params, "page", minimum=1, maximum=MAX_PAGE, clamp=True) or 1,
            per_page=_page_size(params),
        )

    def as_params(self, **changes: Any) -> str:
        """This view's URL query, with ``changes`` applied; defaults are left out."""
        state = replace(self, **changes)
        defaults = BoardQuery()
        return urlencode(
            {
                f.name: getattr(state, f.name)
                for f in fields(state)
                if getattr(state, f.name) not in (None, "", getattr(defaults, f.name))
            }
        )

    def cache_key(self) -> str:
        """The board's key: every page of a board is cut from the same cached board."""
        board_state = self.as_params(page=1, per_page=DEFAULT_PAGE_SIZE)
        return hashlib.sha1(board_state.encode()).hexdigest()[:16]


def _page_size(params: QueryDict | dict[str, str]) -> int:
    if qs.choice_param(params, "per_page", ("all", "0"), ""):  # as_params writes "all" as 0
        return 0
    size = qs.int_param(params, "per_page", minimum=1, maximum=max(PAGE_SIZES))
    return size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE


@dataclass
class Cell:
    value: float
    ci_low: float
    ci_high: float
    ceiling: float | None
    n: int
    score_id: int = 0
    resampling: str = ""  # the score's bootstrap resamples, where it keeps them
    stale: tuple[str, ...] = ()  # why the score no longer holds (provenance.stale_reasons)

    @property
    def normalized(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None


@dataclass
class Row:
    model_id: int
    model_name: str
    source: str
    modality: str
    weights: str
    parameter_count: int | None
    layer: str
    precision: str
    layers_scored: int = 1
    cells: dict[str, Cell] = field(default_factory=dict)
    identifier: str = ""
    # Against the leader on the sort metric: by the paired test where p_vs_leader is set,
    # else by interval overlap; None for the leader and rows without the sort metric.
    separable_from_leader: bool | None = None
    p_vs_leader: float | None = None  # Holm-adjusted over the comparisons with the leader
    rank_interval: tuple[int, int] | None = None  # 95%, over the resamples
    tie_group: int | None = None

    @property
    def stale(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(reason for cell in self.cells.values() for reason in cell.stale))

    @property
    def is_derived(self) -> bool:
        """Computed from human descriptions of the stimuli, not from the stimuli themselves."""
        return self.source in ("language", "stacked")

    @property
    def is_baseline(self) -> bool:
        return self.source == "baseline"

    @property
    def is_untrained(self) -> bool:
        return self.weights == "untrained"


@dataclass
class Board:
    target: Target
    query: BoardQuery
    metric_keys: list[str]
    sort_key: str
    rows: list[Row]
    total_models: int
    facets: dict[str, list[str]]
    key: str = ""  # its cache key (board_key)
    # How rows were compared with the leader: "paired" (bootstrap on shared resamples, Holm),
    # "overlap" (95% intervals overlap: the leader's score keeps no resamples) or "" (no rows).
    separability: str = ""
    compared: int = 0  # rows on shared resamples (rank intervals, tie groups); 0: none
    tie_group_rows: int = 0  # rows given a tie group (the top TIE_GROUP_ROWS compared)
    stale_scores: int = 0

    @property
    def note(self) -> str:
        return separability_note(self)


@dataclass
class BoardPage:
    """The rows of one page of a board, with their ranks on the whole board."""

    ranked_rows: list[tuple[int, Row]]
    number: int
    count: int  # pages
    first: int  # rank of the first row shown
    last: int
    total: int  # rows on the board

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.count


def board_page(board: Board, query: BoardQuery) -> BoardPage:
    """One page of the board; a page past the end shows the last one."""
    total = len(board.rows)
    size = query.per_page or max(total, 1)
    count = max(1, math.ceil(total / size))
    number = min(query.page, count)
    start = (number - 1) * size
    rows = board.rows[start : start + size]
    ranked = [(start + offset + 1, row) for offset, row in enumerate(rows)]
    return BoardPage(ranked, number, count, start + 1, start + len(rows), total)


def scores_version(target: Target) -> str:
    """Changes whenever a score on ``target`` is added, replaced or removed."""
    stamp = Score.objects.filter(target=target).aggregate(
        n=Count("id"), last=Max("id"), changed=Max("created_at")
    )
    raw = f"{stamp['n']}-{stamp['last']}-{stamp['changed']}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def stale_count(board: Board, *, key: str) -> int:
    """The board's stale scores, cached beside it: a cached page need not load the board."""
    count = cache.get_or_set(f"{key}:stale", lambda: board.stale_scores, CACHE_SECONDS)
    return int(count or 0)


def board_key(*, target: Target, query: BoardQuery) -> str:
    """The cache key of this view's board: it changes whenever a score on the target does,
    and with any metric's code version (which makes scores stale). An edit of a model or a
    dataset that makes scores stale shows once the cached board expires (CACHE_SECONDS)."""
    published = hashlib.sha1(
        f"{target.published_ceiling}|{target.published_ceiling_source}".encode()
    ).hexdigest()[:8]  # the board draws the published ceiling: a new one is a new board
    versions = f"{scores_version(target)}:{metric_versions()}:{published}:{archived_models_stamp()}"
    return f"board:{target.pk}:{versions}:{query.cache_key()}"


def metric_versions() -> str:
    """Changes with any metric's code version."""
    versions = ",".join(f"{name}={info.version}" for name, info in sorted(METRICS.items()))
    return hashlib.sha1(versions.encode()).hexdigest()[:8]


def leaderboard(*, target: Target, query: BoardQuery, key: str = "") -> Board:
    key = key or board_key(target=target, query=query)
    board = cache.get(key)
    if board is None:
        board = _compute(target, query)
        cache.set(key, board, CACHE_SECONDS)
    board.key = key
    return board


SCORE_FIELDS = (
    "target_id", "model_id", "layer", "embedding_set__precision", "metric_key",
    "value", "ci_low", "ci_high", "ceiling", "n",
    "id", "metric", "resampling", "provenance__code_version", "provenance__dataset_hash",
    "provenance__model_revision",
)  # fmt: skip
MODEL_FIELDS = (
    "id", "name", "source", "identifier", "modality", "weights", "parameter_count",
    "default_layer", *REVISION_FIELDS,
)  # fmt: skip


def _compute(target: Target, query: BoardQuery) -> Board:
    models = {
        m["id"]: m
        for m in PretrainedModel.objects.filter(scores__target=target, archived_at__isnull=True)
        .distinct()
        .values(*MODEL_FIELDS)
    }
    scores = (
        Score.objects.filter(target=target, model__archived_at__isnull=True)  # listed models
        .order_by("created_at", "id")
        .values_list(*SCORE_FIELDS)
        .iterator(chunk_size=5000)
    )
    board = _board(target, query, models, scores)
    compare_on_resamples(board)
    return board


def _board(
    target: Target, query: BoardQuery, models: dict[int, dict[str, Any]], scores: Any
) -> Board:
    """The board from score tuples (SCORE_FIELDS, oldest first) of this target."""
    latest: dict[tuple[int, str, str], Row] = {}
    revisions = {model_id: model_revision_key(m) for model_id, m in models.items()}
    dataset_hash = target.dataset.content_hash
    for (
        _, model_id, layer, precision, key, value, low, high, ceiling, n,
        score_id, metric, resampling, code_version, recorded_hash, recorded_revision,
    ) in scores:  # fmt: skip
        row = latest.get((model_id, layer, precision or ""))
        if row is None:
            m = models[model_id]
            row = Row(
                model_id, m["name"], m["source"], m["modality"], m["weights"],
                m["parameter_count"], layer, precision or "", identifier=m["identifier"],
            )  # fmt: skip
            latest[(model_id, layer, precision or "")] = row
        stale = stale_reasons(
            Recorded(code_version, recorded_hash, recorded_revision),
            metric=metric,
            dataset_hash=dataset_hash,
            model_revision=revisions[model_id],
        )
        # later scores replace earlier
        row.cells[key] = Cell(value, low, high, ceiling, n, score_id, resampling, stale)
    rows = [row for row in latest.values() if _passes(row, query)]
    metric_keys = sorted({key for row in rows for key in row.cells})
    sort_key = query.sort if query.sort in metric_keys else (metric_keys[0] if metric_keys else "")
    rows = _choose_layers(rows, query.layers, sort_key, models)
    rows.sort(key=lambda r: _sort_value(r, sort_key, query.order))
    present = {row.model_id for row in latest.values()}
    facets = {
        "modality": sorted({models[i]["modality"] for i in present}),
        "source": sorted({models[i]["source"] for i in present}),
    }
    total = len({row.model_id for row in latest.values()})
    board = Board(target, query, metric_keys, sort_key, rows, total, facets)
    board.stale_scores = sum(1 for row in latest.values() for c in row.cells.values() if c.stale)
    _mark_overlap(board)
    return board


def _passes(row: Row, query: BoardQuery) -> bool:
    if query.modality and row.modality != query.modality:
        return False
    if query.source and row.source != query.source:
        return False
    if query.q and query.q.lower() not in row.model_name.lower():
        return False
    params = row.parameter_count
    if query.min_params is not None and (params is None or params < query.min_params):
        return False
    return not (query.max_params is not None and (params is None or params > query.max_params))


def _choose_layers(
    rows: list[Row], mode: str, sort_key: str, models: dict[int, dict[str, Any]]
) -> list[Row]:
    if mode == "all":
        return rows
    by_model: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_model[(row.model_id, row.precision)].append(row)
    chosen = []
    for (model_id, _), candidates in by_model.items():
        if mode == "default":
            default = models[model_id]["default_layer"]
            picked = next((r for r in candidates if r.layer == default), None)
        else:
            scored = [r for r in candidates if sort_key in r.cells]
            picked = max(scored, key=lambda r: r.cells[sort_key].value, default=candidates[0])
        if picked is not None:
            picked.layers_scored = len(candidates)
            chosen.append(picked)
    return chosen


def _sort_value(row: Row, key: str, order: str) -> tuple[bool, float]:
    cell = row.cells.get(key)
    if cell is None:
        return (True, 0.0)  # missing scores last, whatever the order
    return (False, -cell.value if order == "desc" else cell.value)


def _mark_overlap(board: Board) -> None:
    """Separability from the leader where no resamples are loaded: a row whose 95% interval
    overlaps the leader's is not separated from it (conservative: see compare_on_resamples)."""
    key, rows = board.sort_key, board.rows
    leader = rows[0].cells.get(key) if rows else None
    if leader is None:
        return
    board.separability = "overlap"
    for row in rows[1:]:
        cell = row.cells.get(key)
        if cell is not None:
            row.separable_from_leader = (
                cell.ci_high < leader.ci_low
                if board.query.order == "desc"
                else cell.ci_low > leader.ci_high
            )


TIE_GROUP_ROWS = 100  # rows given a tie group (each group's head tested against the rest)


def compare_on_resamples(board: Board) -> None:
    """Paired comparisons on the sort metric among the rows whose scores share the best such
    row's bootstrap resamples ("compared" rows): their 95% rank intervals among themselves
    and their tie groups (``paired.TIE_GROUPS_RULE``, the top TIE_GROUP_ROWS of them); and,
    where that best row is the leader, each compared row's Holm-adjusted p-value against it
    (the family: every comparison with the leader). Rows that cannot be compared keep the
    interval-overlap mark of ``_mark_overlap``."""
    key, rows = board.sort_key, board.rows
    reference = next((r for r in rows if (c := r.cells.get(key)) and c.resampling), None)
    if reference is None:
        return
    resampling = reference.cells[key].resampling
    compared = [r for r in rows if (c := r.cells.get(key)) and c.resampling == resampling]
    if len(compared) < 2:
        return
    samples = load_resamples([row.cells[key].score_id for row in compared])
    values = np.array([row.cells[key].value for row in compared])
    board.compared = len(compared)
    intervals = rank_intervals(samples, higher_is_better=board.query.order == "desc")
    for row, interval in zip(compared, intervals or [], strict=False):
        row.rank_interval = interval
    groups = tie_groups(samples, values, limit=TIE_GROUP_ROWS)
    for row, group in zip(compared, groups, strict=False):
        row.tie_group = group
    board.tie_group_rows = len(groups)
    if reference is not rows[0]:
        return  # the leader keeps no resamples: its marks stay by overlap
    board.separability = "paired"
    adjusted = holm(p_values_against(samples[0], values[0], samples[1:], values[1:]))
    for row, p in zip(compared[1:], adjusted, strict=True):
        if np.isfinite(p):
            row.p_vs_leader = float(p)
            row.separable_from_leader = bool(p < ALPHA)


def load_resamples(score_ids: list[int]) -> np.ndarray:
    """(scores, resamples) values of these scores, in the order given."""
    stored = dict(Score.objects.filter(pk__in=score_ids).values_list("pk", "resamples"))
    return np.stack([np.asarray(resamples_from_bytes(stored[pk])) for pk in score_ids])


def separability_note(board: Board) -> str:
    """How the board's marks, rank intervals and tie groups were made, in words (the page's
    footnote and the CSV's method column)."""
    key = board.sort_key
    if board.separability == "paired":
        others = board.compared - 1
        note = (
            f"“≈ leader”: the paired bootstrap on the same stimulus resamples does not "
            f"separate the model from the leader on {key} (two-sided, Holm over the "
            f"{others} comparison{'s' if others != 1 else ''} with the leader, alpha = {ALPHA})."
        )
        if board.compared < len(board.rows):
            note += " Rows whose scores keep other or no resamples are marked by overlap."
    elif board.compared:
        note = (
            "“≈ leader”: the model's 95% interval overlaps the leader's; the leader's score "
            "keeps no bootstrap resamples (a stacked model, or a score from before resamples "
            "were kept), so no paired test against it is possible."
        )
    else:
        note = (
            f"“≈ leader”: the model's 95% interval overlaps the leader's on {key}; these "
            "scores keep no bootstrap resamples, so no paired test is possible and overlap "
            "is the (conservative) criterion."
        )
    if board.compared:
        note += (
            f" Rank intervals: the 2.5th to 97.5th percentile of the model's rank among the "
            f"{board.compared} models on shared resamples. Tie groups"
            f"{f' (the top {board.tie_group_rows})' if board.tie_group_rows < board.compared else ''}"
            f": {TIE_GROUPS_RULE}."
        )
    return note


CSV_FIXED = ["rank", "model", "source", "modality", "weights", "parameters", "layer", "precision"]


def board_csv_rows(board: Board) -> list[list[Any]]:
    """Every row of the board; per metric the score, its interval, ceiling, whether it is
    stale and why, and its provenance (JSON); on the sort metric the paired comparison."""
    header = list(CSV_FIXED)
    for key in board.metric_keys:
        header += [key, f"{key} ci_low", f"{key} ci_high", f"{key} ceiling", f"{key} of ceiling"]
        header += [f"{key} stale", f"{key} provenance", f"{key} metric name"]
    header += [
        f"separable from leader on {board.sort_key}",
        "p vs leader (Holm)",
        "rank interval low",
        "rank interval high",
        "tie group",
        "compared with the leader by",
        "published ceiling",  # reported elsewhere, not computed from the judgments
        "published ceiling source",
    ]
    provenance = _provenance_of(board)
    out = [header]
    for rank, row in enumerate(board.rows, start=1):
        line: list[Any] = [
            rank, row.model_name, row.source, row.modality, row.weights,
            row.parameter_count, row.layer, row.precision,
        ]  # fmt: skip
        for key in board.metric_keys:
            cell = row.cells.get(key)
            line += (
                [cell.value, cell.ci_low, cell.ci_high, cell.ceiling, cell.normalized,
                 "; ".join(cell.stale), json.dumps(provenance.get(cell.score_id, {}))]
                if cell
                else ["", "", "", "", "", "", ""]  # missing, not zero
            )  # fmt: skip
            line.append(metric_name(key))
        interval = row.rank_interval or ("", "")
        line += [
            "" if row.separable_from_leader is None else row.separable_from_leader,
            "" if row.p_vs_leader is None else row.p_vs_leader,
            interval[0],
            interval[1],
            "" if row.tie_group is None else row.tie_group,
            "paired" if row.p_vs_leader is not None else ("overlap" if row.cells else ""),
            "" if board.target.published_ceiling is None else board.target.published_ceiling,
            board.target.published_ceiling_source,
        ]
        out.append(line)
    return out


def _provenance_of(board: Board) -> dict[int, Any]:
    # The target's scores, not an id list: a large board's ids would overflow a query.
    return dict(Score.objects.filter(target=board.target).values_list("pk", "provenance"))


# --- Across targets -------------------------------------------------------------------------
# Label accuracy and agreement with people answer different questions: never one mean.
OVERALL_GROUPS = (("labels", "Label accuracy"), ("human", "Human alignment"))


@dataclass
class OverallRow:
    model_id: int
    model_name: str
    source: str
    cells: dict[int, Cell | None]  # target id -> best-layer score on its primary metric
    ranks: dict[int, float]  # target id -> normalised rank (0 first, 1 last): boards of 2+
    mean_rank: float | None  # mean of ``ranks``; None when no board of 2+ models has it
    covered: int  # targets it has a score on
    ranked: int  # of those, boards of two or more models (the mean's terms)


@dataclass
class OverallGroup:
    kind: str  # "labels" or "human"
    title: str
    targets: list[Target]
    rows: list[OverallRow]
    sizes: dict[int, int]  # target id -> models scored on it

    @property
    def rankable(self) -> int:
        """Targets that rank two or more models: the most boards a model can be ranked on."""
        return sum(1 for size in self.sizes.values() if size >= 2)


@dataclass
class OverallBoard:
    groups: list[OverallGroup]  # only groups with scores, labels first
    primary: dict[int, str]  # target id -> the metric compared on it


def normalised_ranks(
    values: dict[int, float], *, higher_is_better: bool = True
) -> dict[int, float]:
    """Each key's rank among ``values`` scaled to [0, 1]: (rank - 1) / (n - 1), so 0 is first
    and 1 is last whatever the board's size; ties share the mean of their ranks. A board of
    one model has no rank to give (first and last at once): empty."""
    if len(values) < 2:
        return {}
    keys = list(values)
    signed = [-values[k] if higher_is_better else values[k] for k in keys]
    ranks = scipy.stats.rankdata(signed, method="average")
    return {k: float((r - 1) / (len(keys) - 1)) for k, r in zip(keys, ranks, strict=True)}


def overall_board() -> OverallBoard:
    """Each model's best-layer score per target (its primary metric: the first in sort
    order), ranked within each target, in two groups (label accuracy, human alignment). A
    model's mean normalised rank is over the boards of its group that rank two or more
    models; it is ordered by how many such boards it is ranked on, then by that mean. Gaps
    are not filled: a model's coverage is shown.

    Four queries whatever the number of targets, cached until any score changes."""
    return _cached_until_scores_change("overall:v2", _overall)


def _cached_until_scores_change(prefix: str, compute: Callable[[], T]) -> T:
    """``compute()``, cached under a key that changes whenever any score does."""
    key = f"{prefix}:{_every_score_stamp()}"
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, CACHE_SECONDS)
    return value


def _every_score_stamp() -> str:
    """Changes whenever any score is added, replaced or removed, and whenever a target leaves
    or rejoins the lists (archived, or simulated)."""
    stamp = Score.objects.aggregate(n=Count("id"), last=Max("id"), changed=Max("created_at"))
    # Archiving a target or its dataset takes its board off the lists, archiving a model its
    # rows, and judgments marked simulated (a pilot's) take their target off the boards
    # across targets and the front page: a change too. Every such target id, in order, with
    # why (a count and a sum could collide); one query.
    archived = Q(archived_at__isnull=False) | Q(dataset__archived_at__isnull=False)
    unlisted = Target.objects.filter(archived | Q(judgments__simulated=True)).order_by("id")
    stamp["unlisted"] = [
        (pk, target_archived is not None or dataset_archived is not None, bool(simulated))
        for pk, target_archived, dataset_archived, simulated in unlisted.values_list(
            "id", "archived_at", "dataset__archived_at", "judgments__simulated"
        )
    ]
    stamp["archived_models"] = archived_models_stamp()
    return hashlib.sha1(repr(sorted(stamp.items())).encode()).hexdigest()[:16]


def archived_models_stamp() -> str:
    """Changes whenever a model is archived or unarchived (its rows leave or rejoin boards)."""
    archived = PretrainedModel.objects.filter(archived_at__isnull=False).order_by("id")
    ids = ",".join(str(pk) for pk in archived.values_list("id", flat=True))
    return hashlib.sha1(ids.encode()).hexdigest()[:16]


def _every_board() -> list[Board]:
    """Every target's default board (best layer per model, sorted by its first metric), from
    three queries whatever the number of targets."""
    targets = list(
        Target.objects.filter(scores__isnull=False)
        .filter(archived_at__isnull=True, dataset__archived_at__isnull=True)  # not listed
        # A pilot's simulated participants are not people: their boards are not ranked.
        .filter(MADE_BY_PEOPLE)
        .distinct()
        .select_related("dataset", "judgments")
    )
    models = {
        m["id"]: m
        for m in PretrainedModel.objects.filter(scores__isnull=False, archived_at__isnull=True)
        .distinct()
        .values(*MODEL_FIELDS)
    }
    by_target: dict[int, list[Any]] = defaultdict(list)
    for score in (
        Score.objects.filter(model__archived_at__isnull=True)  # an archived model is unlisted
        .order_by("created_at", "id")
        .values_list(*SCORE_FIELDS)
        .iterator(chunk_size=5000)
    ):
        by_target[score[0]].append(score)
    return [_board(target, BoardQuery(), models, by_target[target.pk]) for target in targets]


def _overall() -> OverallBoard:
    boards = _every_board()
    targets = [board.target for board in boards]
    primary: dict[int, str] = {}
    per_target: dict[int, dict[int, Cell]] = {}
    names: dict[int, tuple[str, str]] = {}
    for board in boards:
        target = board.target
        primary[target.pk] = board.sort_key
        per_target[target.pk] = {}
        for row in board.rows:  # best layer first: one cell per model
            cell = row.cells.get(board.sort_key)
            if cell is not None and row.model_id not in per_target[target.pk]:
                per_target[target.pk][row.model_id] = cell
                names[row.model_id] = (row.model_name, row.source)
    groups = []
    for kind, title in OVERALL_GROUPS:
        members = [t for t in targets if (t.kind == "labels") == (kind == "labels")]
        if members:
            groups.append(_overall_group(kind, title, members, per_target, primary, names))
    return OverallBoard(groups, primary)


def _overall_group(
    kind: str,
    title: str,
    targets: list[Target],
    per_target: dict[int, dict[int, Cell]],
    primary: dict[int, str],
    names: dict[int, tuple[str, str]],
) -> OverallGroup:
    ranks: dict[int, dict[int, float]] = defaultdict(dict)
    for target in targets:
        info = METRICS.get(primary[target.pk].split("(")[0])
        values = {model_id: cell.value for model_id, cell in per_target[target.pk].items()}
        better = info.higher_is_better if info else True
        for model_id, rank in normalised_ranks(values, higher_is_better=better).items():
            ranks[model_id][target.pk] = rank
    present = {model_id for t in targets for model_id in per_target[t.pk]}
    rows = []
    for model_id in present:
        name, source = names[model_id]
        mine = ranks[model_id]
        rows.append(
            OverallRow(
                model_id,
                name,
                source,
                {t.pk: per_target[t.pk].get(model_id) for t in targets},
                mine,
                sum(mine.values()) / len(mine) if mine else None,
                sum(model_id in per_target[t.pk] for t in targets),
                len(mine),
            )
        )
    rows.sort(
        key=lambda r: (
            -r.ranked,
            r.mean_rank if r.mean_rank is not None else 2.0,
            -r.covered,
            r.model_name,
        )
    )
    return OverallGroup(kind, title, targets, rows, {t.pk: len(per_target[t.pk]) for t in targets})


def overall_csv_rows(board: OverallBoard) -> list[list[Any]]:
    """One line per model and target it has a score on: the model's group, mean normalised
    rank and coverage, then the score and its normalised rank (blank: a board of one)."""
    header: list[Any] = ["group", "model", "mean normalised rank", "ranked on", "scored on"]
    header += ["target", "metric", "metric name", "value", "ci_low", "ci_high"]
    header += ["normalised rank"]
    out: list[list[Any]] = [header]
    for group in board.groups:
        for row in group.rows:
            fixed: list[Any] = [
                group.title.lower(),
                row.model_name,
                row.mean_rank,
                row.ranked,
                row.covered,
            ]
            for target in group.targets:
                cell = row.cells[target.pk]
                if cell is None:
                    continue  # missing, not zero
                rank = row.ranks.get(target.pk, "")
                out.append(
                    [*fixed, target.name, board.primary[target.pk],
                     metric_name(board.primary[target.pk]), cell.value, cell.ci_low,
                     cell.ci_high, rank]
                )  # fmt: skip
    return out


# --- The front page -----------------------------------------------------------------------------
# What the home page answers first: how close each model comes to people (score, CI, the
# human data's ceiling and the score as a fraction of it, against chance), then label boards.
FRONT_ROWS = 8  # rows per board on the front page; the board's own page has them all


CEILING_MEANING = {
    "pairs": "split-half reliability of the ratings (Spearman-Brown)",
    "triplets": "leave-one-out agreement among people",
    "2afc": "leave-one-out agreement among people",
}


# --- Ceilings: computed from the judgments, or published elsewhere ------------------------------
@dataclass(frozen=True)
class Ceilings:
    """A human target's ceiling as its board states it: the one computed from its judgments,
    or why there is none (from the data), and a ceiling published elsewhere with its source."""

    metric: str  # the main metric of the target's kind, whose range a ceiling lies in
    computed: float | None
    meaning: str  # what the computed ceiling is (CEILING_MEANING)
    reason: str  # why the judgments give no ceiling; blank where they give one
    published: float | None
    source: str

    @property
    def metric_label(self) -> str:
        return METRICS[self.metric].label

    @property
    def value_range(self) -> tuple[float, float]:
        return METRICS[self.metric].value_range

    def applies_to(self, key: str) -> bool:
        """Whether a board column is scored against these judgments (every human metric of
        the target's kind is bounded by how well people agree)."""
        info = METRICS.get(key.split("(")[0])
        return (
            info is not None
            and self.metric in METRICS
            and bool(set(info.target_kinds) & set(METRICS[self.metric].target_kinds))
        )


ITEM_WORDS = {"pairs": "pair", "triplets": "triplet", "2afc": "2AFC item"}


def target_ceilings(target: Target, *, reason: str | None = None) -> Ceilings | None:
    """The target's ceilings; None for label targets (labels have no human noise).
    ``reason``: why there is no computed ceiling, where the caller has it already."""
    judgments = target.judgments
    if judgments is None:
        return None
    main = next((name for name, info in METRICS.items() if info.main_for == target.kind), "")
    computed = judgments.ceiling
    if computed is None and reason is None:
        reason = no_ceiling_reasons([judgments])[judgments.pk]
    return Ceilings(
        metric=main,
        computed=computed,
        meaning=CEILING_MEANING.get(target.kind, ""),
        reason="" if computed is not None else str(reason),
        published=target.published_ceiling,
        source=target.published_ceiling_source,
    )


def front_ceilings(front: FrontPage) -> dict[int, Ceilings | None]:
    """Each human board's ceilings on the front page, read afresh (the cached front page's
    targets may predate a published ceiling): two queries at most, the reasons cached."""
    ids = [board.target.pk for board in front.human]
    targets = list(Target.objects.filter(pk__in=ids).select_related("judgments"))
    reasons = no_ceiling_reasons(
        [t.judgments for t in targets if t.judgments is not None and t.judgments.ceiling is None]
    )
    return {t.pk: target_ceilings(t, reason=reasons.get(t.judgments_id or 0, "")) for t in targets}


def no_ceiling_reasons(sets: list[HumanJudgments]) -> dict[int, str]:
    """Why each of these judgments gives no ceiling ("only 1 of 998 pairs was judged more
    than once"), without reading their rows: pair ratings store their reason with their
    reliability; triplets and 2AFC give none only when no item was answered twice, so their
    responses (counted in one query) are as many items."""
    keys = {f"no-ceiling-reason:v2:{j.pk}": j for j in sets}
    cached = cache.get_many(list(keys))
    missing = {j.pk: j for key, j in keys.items() if key not in cached}
    choices = [pk for pk, j in missing.items() if j.kind != "pairs"]
    responses = dict(
        Judgment.objects.filter(judgments_id__in=choices)
        .values("judgments_id")
        .annotate(n=Count("id"))
        .values_list("judgments_id", "n")
        if choices
        else ()
    )
    fresh = {pk: _stated_reason(j, responses.get(pk, 0)) for pk, j in missing.items()}
    cache.set_many({f"no-ceiling-reason:v2:{pk}": reason for pk, reason in fresh.items()}, None)
    return {**{j.pk: str(reason) for key, reason in cached.items() if (j := keys[key])}, **fresh}


def _stated_reason(judgments: HumanJudgments, responses: int) -> str:
    word = ITEM_WORDS.get(judgments.kind, "item")
    if judgments.kind == "pairs":
        stated = (judgments.reliability or {}).get("reason", "")
        return str(stated) or "the repeated ratings do not vary enough to split."
    if responses == 0:
        return f"there are no {word}s to judge agreement on."
    return (
        f"only 0 of {responses:,} {word}s were answered more than once; a leave-one-out "
        "ceiling needs the same item answered by two or more people."
    )


def chances_for(kind: str) -> list[tuple[str, Chance]]:
    """(metric name, chance) for each metric with a fixed chance level that scores targets
    of ``kind``: what a board of that target says about chance without loading scores. Named
    from READINGS, as the board's headers are."""
    return [
        (metric_family_name(name), CHANCE[name])
        for name, info in METRICS.items()
        if kind in info.target_kinds and name in CHANCE
    ]


def chance_of(metric_key: str) -> Chance | None:
    """Chance level of a metric key such as ``odd_one_out`` or ``pair_alignment(...)``; None
    where it depends on the data (label accuracy: the classes and their sizes)."""
    return CHANCE.get(metric_key.split("(")[0])


@dataclass
class FrontBoard:
    """The top of one target's board, as the front page shows it."""

    board: Board
    metric_label: str
    chance: Chance | None
    ceiling: float | None
    ceiling_meaning: str
    rows: list[tuple[int, Row]]  # (rank, row), the best FRONT_ROWS
    compare_ids: list[int]  # up to four top models, for the compare page

    @property
    def target(self) -> Target:
        return self.board.target

    @property
    def chance_fraction(self) -> float | None:
        """Where chance falls on the fraction-of-ceiling scale (a model at chance scores it)."""
        return self.chance.value / self.ceiling if self.chance and self.ceiling else None

    @property
    def compare_query(self) -> str:
        """The compare page's query for this target and its top models."""
        return urlencode([("target", self.target.pk)] + [("models", i) for i in self.compare_ids])

    @property
    def cells(self) -> list[tuple[int, Row, Cell | None]]:
        return [(rank, row, row.cells.get(self.board.sort_key)) for rank, row in self.rows]


@dataclass
class FrontPage:
    human: list[FrontBoard]  # newest target first: a visitor's own target leads once scored
    labels: list[FrontBoard]


def front_page() -> FrontPage:
    """The human-alignment boards, then the label boards, each cut to its best rows; computed
    from three queries and cached until any score changes (one query then)."""
    return _cached_until_scores_change("front:v1", _front_page)


def _front_page() -> FrontPage:
    human: list[FrontBoard] = []
    labels: list[FrontBoard] = []
    for board in sorted(_every_board(), key=lambda b: -b.target.pk):
        if not board.rows:
            continue
        front = _front_board(board)
        (labels if board.target.kind == "labels" else human).append(front)
    labels.sort(key=lambda f: (f.target.dataset.name, f.target.name))
    return FrontPage(human, labels)


def _front_board(board: Board) -> FrontBoard:
    ceilings = [
        cell.ceiling
        for row in board.rows
        if (cell := row.cells.get(board.sort_key)) is not None and cell.ceiling
    ]
    ranked = list(enumerate(board.rows[:FRONT_ROWS], start=1))
    return FrontBoard(
        board=board,
        metric_label=metric_name(board.sort_key),
        chance=chance_of(board.sort_key),
        ceiling=ceilings[0] if ceilings else None,
        ceiling_meaning=CEILING_MEANING.get(board.target.kind, ""),
        rows=ranked,
        compare_ids=list(dict.fromkeys(row.model_id for row in board.rows))[:4],
    )


def runs_working() -> int:
    """Runs queued or running: the front page says its boards are still filling in."""
    return Run.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).count()
