"""The board labels its best-layer choice optimistic and links to the cross-validated choice,
computed from the embeddings the scores were computed on."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from evaluation import layer_choice, storage
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.models import EmbeddingSet, Judgment, Score, Target
from tests.conftest import make_text_dataset
from tests.evaluation.test_human_targets import text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db
KEY = "pair_alignment(correlation=spearman)"


class FakeQueue:
    """Stands in for the Celery app: records what the pages send; ``run`` does it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name: str, args: list) -> None:
        self.sent.append((name, args))

    def run(self) -> None:
        from workers import tasks

        for name, args in self.sent:
            {
                "evaluation.layer_choice": tasks.layer_choice,
                "evaluation.random_floor": tasks.random_floor,
            }[name](*args)
        self.sent.clear()


@pytest.fixture(autouse=True)
def queue(monkeypatch):
    cache.clear()
    fake = FakeQueue()
    monkeypatch.setattr(layer_choice, "current_app", fake)
    monkeypatch.setattr(layer_choice, "cache_is_shared", lambda: True)  # as behind gunicorn
    yield fake
    cache.clear()


def computed(client, url: str, queue: FakeQueue):
    """The page once the worker has computed what its first visit sent."""
    first = client.get(url)
    assert first.context["choices"] is None and "layer-choice-pending" in first.content.decode()
    queue.run()
    return client.get(url)


def stored_layer(model, dataset, layer: str, x: np.ndarray) -> EmbeddingSet:
    name = f"test/{model.pk}-{layer}.npy"
    scratch = storage.scratch_folder(storage.EMBEDDINGS)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        path = Path(folder) / "x.npy"
        np.save(path, x.astype(np.float32))
        storage.store_file(storage.EMBEDDINGS, name, path)
    return EmbeddingSet.objects.create(
        fingerprint=f"{model.pk}-{layer}", model=model, dataset=dataset, layer=layer,
        pooling="mean", weights_id="test", relative_path=name, count=len(x),
        dim=x.shape[1], extraction_seconds=0.0,
    )  # fmt: skip


def test_board_calls_best_layer_optimistic_and_cross_validates_it(client, queue):
    rng = np.random.default_rng(1)
    n = 40
    truth = rng.normal(size=(n, 8))  # people's ratings follow this structure
    dataset = text_dataset("forty words", [f"word {k}" for k in range(n)])
    unit = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    rows = [
        JudgmentRow((i, j), value=float(unit[i] @ unit[j] + rng.normal(scale=0.3)))
        for i, j in itertools.combinations(range(n), 2)
    ]
    judgments = judgments_create(dataset=dataset, name="ratings", kind="pairs", rows=rows)
    target = Target.objects.get(judgments=judgments)
    model = PretrainedModelFactory(name="three-layer-net", modality="text")
    run = RunFactory(dataset=dataset)
    layers = {
        "block1": rng.normal(size=(n, 8)),  # unrelated to the ratings
        "block2": truth + rng.normal(scale=0.5, size=(n, 8)),  # related
        "block3": rng.normal(size=(n, 8)),
    }
    for value, (layer, x) in zip((0.05, 0.6, 0.04), layers.items(), strict=True):
        ScoreFactory(
            run=run, model=model, target=target, layer=layer, metric_key=KEY, value=value,
            embedding_set=stored_layer(model, dataset, layer, x),
        )  # fmt: skip
    board = client.get(target.get_absolute_url()).content.decode()
    assert "best of 3 layers · optimistic" in board
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    assert f'href="{link}?' in board and "the cross-validated layer choice" in board
    page = computed(client, link, queue)
    assert page.status_code == 200
    choice = page.context["choices"][0].choice
    assert choice.optimistic_layer == "block2" and choice.chosen == {"block2": 40}
    assert choice.cv_mean <= choice.same_halves_optimistic and choice.cv_mean > 0.3
    html = page.content.decode()
    assert "three-layer-net" in html and f"{choice.cv_mean:.3f}" in html
    assert "over 20 random halvings (seed 0)" in html


def test_label_boards_cross_validate_leave_one_out_knn(client, queue):
    rng = np.random.default_rng(2)
    labels = [f"class {k % 4}" for k in range(80)]
    dataset = make_text_dataset("eighty", [(f"text {k}", label) for k, label in enumerate(labels)])
    target = Target.objects.get(dataset=dataset, kind="labels")
    centres = rng.normal(size=(4, 6))
    informative = np.array([centres[k % 4] for k in range(80)]) + rng.normal(size=(80, 6))
    model = PretrainedModelFactory(name="two-layer-net", modality="text")
    run = RunFactory(dataset=dataset)
    for value, layer, x in ((0.9, "late", informative), (0.3, "early", rng.normal(size=(80, 6)))):
        ScoreFactory(
            run=run, model=model, target=target, layer=layer, metric_key="knn(k=5,split=loo)",
            value=value, embedding_set=stored_layer(model, dataset, layer, x),
        )  # fmt: skip
    page = computed(client, reverse("evaluation:leaderboard_layer_choice", args=[target.pk]), queue)
    choice = page.context["choices"][0].choice
    assert choice.optimistic_layer == "late" and choice.chosen == {"late": 40}
    assert 0.5 < choice.cv_mean <= choice.same_halves_optimistic
    assert choice.items_per_half == 40  # each stimulus is an item: half of them per half


def scored_sweep(n: int = 30, *, precisions: tuple[str, ...] = ("fp32",), archived: bool = False):
    """A pair target with a two-layer model scored at each precision; (target, model)."""
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(n, 6))
    dataset = text_dataset(f"{n} words {archived}", [f"word {k}" for k in range(n)])
    rows = [
        JudgmentRow((i, j), value=float(truth[i] @ truth[j]))
        for i, j in itertools.combinations(range(n), 2)
    ]
    judgments = judgments_create(dataset=dataset, name="ratings", kind="pairs", rows=rows)
    target = Target.objects.get(judgments=judgments)
    model = PretrainedModelFactory(name=f"sweep-net-{n}-{archived}", modality="text")
    for precision in precisions:
        run = RunFactory(dataset=dataset)  # a run per precision
        for layer, x in (("early", rng.normal(size=(n, 6))), ("late", truth)):
            embedding_set = stored_layer(model, dataset, f"{layer}", x)
            embedding_set.precision = precision
            embedding_set.fingerprint += precision
            embedding_set.save()
            ScoreFactory(
                run=run, model=model, target=target, layer=layer, metric_key=KEY, value=0.5,
                embedding_set=embedding_set,
            )  # fmt: skip
    if archived:
        model.archived_at = timezone.now()
        model.save()
    return target, model


def test_layer_choice_is_computed_once_per_target_whatever_the_query(client, queue):
    target, _ = scored_sweep()
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    computed(client, link, queue)
    for query in ("?q=sweep", "?q=net", "?modality=text"):
        page = client.get(link + query)
        assert page.context["choices"], query  # from the cache: nothing new to compute
    assert queue.sent == []


def test_pending_choice_is_sent_once_and_polls(client, queue):
    target, _ = scored_sweep()
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    first = client.get(link).content.decode()
    client.get(link + "?q=x")
    assert [name for name, _ in queue.sent] == ["evaluation.layer_choice"]  # not twice
    assert 'hx-trigger="every 3s"' in first
    partial = client.get(link, headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="choices"')


def test_layer_choice_is_per_precision_and_leaves_archived_models_out(client, queue):
    target, _ = scored_sweep(precisions=("fp32", "fp16"))
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    choices = computed(client, link, queue).context["choices"]
    assert sorted(c.precision for c in choices) == ["fp16", "fp32"]
    assert all(c.choice.layers == ("early", "late") for c in choices)
    archived_target, _ = scored_sweep(archived=True)
    layer_choice.layer_choices_compute(archived_target.pk, KEY)  # as the worker does
    assert layer_choice.board_layer_choices(target=archived_target, metric_key=KEY) == []


def test_undefined_half_scores_are_a_stated_reason(client, queue):
    target, model = scored_sweep()
    constant = np.ones((30, 6))  # every cosine 1: no correlation is defined
    for score in Score.objects.filter(target=target, layer="early"):
        score.embedding_set = stored_layer(model, target.dataset, "flat", constant)
        score.save()
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    page = computed(client, link, queue)
    row = page.context["choices"][0]
    assert row.choice is None and row.problem.startswith("A half has no defined score: layer early")
    assert "A half has no defined score" in page.content.decode()


def test_random_floor_is_computed_by_a_worker_and_an_undefined_one_is_cached(queue):
    target, _ = scored_sweep()
    assert layer_choice.random_floor(target, KEY) is None  # not on the request
    assert queue.sent == [("evaluation.random_floor", [target.pk, KEY])]
    queue.run()
    floor = layer_choice.random_floor(target, KEY)
    assert floor is not None and floor.seeds == 100 and abs(floor.mean) < 0.1
    flat = scored_sweep(n=12)[0]
    Judgment.objects.filter(judgments=flat.judgments).update(value=1.0)  # constant ratings
    assert layer_choice.random_floor(flat, KEY) is None
    queue.run()
    assert cache.get(layer_choice._floor_key(flat, KEY)) == layer_choice.UNDEFINED_FLOOR
    assert layer_choice.random_floor(flat, KEY) is None and queue.sent == []  # not again


def test_without_a_shared_cache_the_page_s_own_htmx_request_computes(client, queue, monkeypatch):
    """One web process with its own cache (make run): no worker's result would reach it."""
    monkeypatch.setattr(layer_choice, "cache_is_shared", lambda: False)
    target, _ = scored_sweep()
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    assert client.get(link).context["choices"] is None  # the page itself computes nothing
    partial = client.get(link, headers={"HX-Request": "true"}).content.decode()
    assert 'id="layer-choices"' in partial and "layer-choice-pending" not in partial
    assert "<code>late</code> \u00d7" in partial  # the layer chosen on the halves
    assert queue.sent == []
