"""Side-by-side comparison of 2-4 models on one target, from their cached embeddings.

Nothing is extracted here: the page uses the EmbeddingSets that runs left behind, and says
which model still needs a run. Heatmaps use a seeded sample of at most ``HEATMAP_STIMULI``
stimuli in one order for every model (by label, or by clustering the first model's
similarities); the human scatter and the disagreement lists use every judged pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from scipy.stats import rankdata, spearmanr

from evaluation import plots
from evaluation.engine.errors import EngineError
from evaluation.engine.metrics.cka import cka_matrix
from evaluation.engine.metrics.human import PairRatings
from evaluation.engine.metrics.rsa import rsa
from evaluation.engine.metrics.similarity import pairwise_similarity
from evaluation.judgments import target_data
from evaluation.metrics import PairsData
from evaluation.models import EmbeddingSet, PretrainedModel, Stimulus, Target

HEATMAP_STIMULI = 120
MAX_MODELS = 4
NEIGHBOURS = 5
DISAGREEMENTS = 10
MAX_PAIRS_IN_SCATTER = 3000
CKA_STIMULI = 2000


@dataclass
class Side:
    model: PretrainedModel
    layer: str
    embedding_set: EmbeddingSet | None
    layers_cached: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    target: Target
    sides: list[Side]
    missing: list[Side]
    order_by: str
    heatmaps: list[Any] = field(default_factory=list)
    scatters: list[Any] = field(default_factory=list)
    rsa: Any = None  # Spearman RSA of every pair of models, as a heatmap
    cka: Any = None
    cka_pair: tuple[str, str] | None = None
    stimulus: Stimulus | None = None
    neighbours: list[tuple[Side, list[tuple[Stimulus, float]]]] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    human_disagreements: list[tuple[Side, list[dict[str, Any]]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def latest_embeddings(model: PretrainedModel, target: Target) -> dict[str, EmbeddingSet]:
    """The newest cached EmbeddingSet per layer of ``model`` on the target's dataset."""
    sets: dict[str, EmbeddingSet] = {}
    for embedding_set in EmbeddingSet.objects.filter(model=model, dataset=target.dataset).order_by(
        "created_at", "id"
    ):
        if embedding_set.is_stored():
            sets[embedding_set.layer] = embedding_set
    return sets


def compare(
    *,
    target: Target,
    models: list[PretrainedModel],
    layers: dict[int, str],
    order_by: str = "label",
    stimulus_id: int | None = None,
) -> Comparison:
    sides = []
    for model in models[:MAX_MODELS]:
        cached = latest_embeddings(model, target)
        layer = layers.get(model.pk) or (
            model.default_layer if model.default_layer in cached else next(iter(cached), "")
        )
        sides.append(Side(model, layer, cached.get(layer), sorted(cached)))
    ready = [side for side in sides if side.embedding_set is not None]
    result = Comparison(target, ready, [s for s in sides if s.embedding_set is None], order_by)
    if len(ready) < 1:
        return result
    stimuli = list(target.dataset.stimuli.order_by("order"))
    vectors = [np.asarray(side.embedding_set.load(), dtype=np.float64) for side in ready]  # type: ignore[union-attr]
    sections = [
        lambda: _heatmaps(result, stimuli, vectors),
        lambda: _neighbours(result, stimuli, vectors, stimulus_id),
    ]
    data = target_data(target) if target.kind == "pairs" else None
    if isinstance(data, PairsData):
        sections.append(lambda: _human(result, stimuli, vectors, data.ratings))
    if len(ready) >= 2:
        sections += [
            lambda: _rsa(result, stimuli, vectors),
            lambda: _disagreements(result, stimuli, vectors),
            lambda: _cka(result, target),
        ]
    for section in sections:
        try:
            section()
        except EngineError as exc:  # e.g. all-zero embeddings: say so, show the rest
            result.problems.append(str(exc))
    return result


def _sample(n: int, size: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def _heatmaps(result: Comparison, stimuli: list[Stimulus], vectors: list[np.ndarray]) -> None:
    index = _sample(len(stimuli), HEATMAP_STIMULI)
    first = pairwise_similarity(vectors[0][index], kind="cosine")
    if result.order_by == "cluster":
        distance = np.clip(1 - first, 0, None)
        np.fill_diagonal(distance, 0)
        order = leaves_list(linkage(squareform(distance, checks=False), method="average"))
    else:
        order = np.argsort([stimuli[i].label for i in index], kind="stable")
    index = index[order]
    labels = [f"{stimuli[i].label or stimuli[i].name}" for i in index]
    for side, x in zip(result.sides, vectors, strict=True):
        matrix = pairwise_similarity(x[index], kind="cosine")
        result.heatmaps.append(
            (
                side,
                plots.heatmap(
                    matrix.tolist(),
                    row_labels=labels,
                    col_labels=labels,
                    title=f"{side.model.name} · {side.layer}",
                    low=-1.0 if matrix.min() < 0 else 0.0,
                    high=1.0,
                    show_labels=False,
                ),
            )
        )


def _neighbours(
    result: Comparison, stimuli: list[Stimulus], vectors: list[np.ndarray], stimulus_id: int | None
) -> None:
    position = next((i for i, s in enumerate(stimuli) if s.pk == stimulus_id), 0)
    result.stimulus = stimuli[position]
    for side, x in zip(result.sides, vectors, strict=True):
        similarity = pairwise_similarity(x[position : position + 1], x, kind="cosine")[0]
        similarity[position] = -np.inf
        top = np.argsort(-similarity)[:NEIGHBOURS]
        result.neighbours.append((side, [(stimuli[i], float(similarity[i])) for i in top]))


def _pair_similarity(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    unit = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    return np.einsum("ij,ij->i", unit[i], unit[j])


def _human(
    result: Comparison, stimuli: list[Stimulus], vectors: list[np.ndarray], pairs: PairRatings
) -> None:
    shown = _sample(len(pairs.i), MAX_PAIRS_IN_SCATTER)
    human_rank = rankdata(pairs.mean)
    for side, x in zip(result.sides, vectors, strict=True):
        model = _pair_similarity(x, pairs.i, pairs.j)
        rho = float(spearmanr(model, pairs.mean).statistic)
        points = [
            plots.Point(
                float(model[k]),
                float(pairs.mean[k]),
                f"{stimuli[pairs.i[k]].name} / {stimuli[pairs.j[k]].name}",
            )
            for k in shown
        ]
        result.scatters.append(
            (
                side,
                rho,
                plots.scatter(
                    points,
                    title=f"{side.model.name}: Spearman {rho:.3f}",
                    x_label="model cosine similarity",
                    y_label="mean human rating",
                ),
            )
        )
        gap = np.abs(rankdata(model) - human_rank) / len(model)
        worst = np.argsort(-gap)[:DISAGREEMENTS]
        result.human_disagreements.append(
            (
                side,
                [
                    {
                        "a": stimuli[pairs.i[k]],
                        "b": stimuli[pairs.j[k]],
                        "model": float(model[k]),
                        "human": float(pairs.mean[k]),
                        "gap": float(gap[k]),
                    }
                    for k in worst
                ],
            )
        )


def _rsa(result: Comparison, stimuli: list[Stimulus], vectors: list[np.ndarray]) -> None:
    """RSA (Spearman between cosine-distance RDMs) of every pair of models, over up to 1,000
    sampled stimuli."""
    index = _sample(len(stimuli), 1000)
    i, j = np.triu_indices(len(index), k=1)
    rdms = [1 - _pair_similarity(x, index[i], index[j]) for x in vectors]
    matrix = [[rsa(a, b, method="spearman") for b in rdms] for a in rdms]
    names = [side.model.name for side in result.sides]
    result.rsa = plots.heatmap(
        matrix, row_labels=names, col_labels=names, title="RSA (Spearman) between models", high=1.0
    )


def _disagreements(result: Comparison, stimuli: list[Stimulus], vectors: list[np.ndarray]) -> None:
    """Pairs ranked most differently by the first two models (ranks as a fraction)."""
    index = _sample(len(stimuli), 1000)
    i, j = np.triu_indices(len(index), k=1)
    i, j = index[i], index[j]
    first, second = (_pair_similarity(x, i, j) for x in vectors[:2])
    gap = (rankdata(first) - rankdata(second)) / len(first)
    for k in np.argsort(-np.abs(gap))[:DISAGREEMENTS]:
        result.disagreements.append(
            {
                "a": stimuli[i[k]],
                "b": stimuli[j[k]],
                "first": float(first[k]),
                "second": float(second[k]),
                "gap": float(gap[k]),
            }
        )


def _cka(result: Comparison, target: Target) -> None:
    """Linear CKA (unbiased) of every cached layer of model A against every one of model B."""
    a, b = result.sides[:2]
    sets_a = latest_embeddings(a.model, target)
    sets_b = latest_embeddings(b.model, target)
    order_a = _depth_order(a.model, list(sets_a))
    order_b = _depth_order(b.model, list(sets_b))
    index = _sample(target.dataset.stimulus_count, CKA_STIMULI)
    load = lambda s: np.asarray(s.load(), dtype=np.float64)[index]  # noqa: E731
    matrix = cka_matrix([load(sets_a[n]) for n in order_a], [load(sets_b[n]) for n in order_b])
    result.cka_pair = (a.model.name, b.model.name)
    result.cka = plots.heatmap(
        matrix.tolist(),
        row_labels=order_a,
        col_labels=order_b,
        title=f"Linear CKA: {a.model.name} layers x {b.model.name} layers",
        low=0.0,
        high=1.0,
    )


def _depth_order(model: PretrainedModel, names: list[str]) -> list[str]:
    depth = {layer["name"]: k for k, layer in enumerate(model.layers or [])}
    return sorted(names, key=lambda name: (depth.get(name, len(depth)), name))
