"""Metric names people read: every key the engine can produce has one, with its exact key on
hover on the pages and beside it in the CSV and the API."""

from __future__ import annotations

import csv
import io
import itertools

import pytest
from django.urls import reverse

from evaluation.metrics import (
    METRICS,
    READINGS,
    metric_description,
    metric_entry,
    metric_name,
    parse_metric_key,
)
from evaluation.models import Target, metric_key
from tests.conftest import make_text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory


def every_key() -> list[str]:
    """Each metric with each of its parameters' choices (whole-number ones at their bounds and
    default): the keys a run can store (``metric_entry`` fills every parameter)."""
    keys = []
    for name, info in METRICS.items():
        values = [
            [c for c, _ in p.choices] if p.choices else sorted({p.minimum, p.default, p.maximum})
            for p in info.parameters
        ]
        for combination in itertools.product(*values):
            params = {p.name: v for p, v in zip(info.parameters, combination, strict=True)}
            entry = metric_entry(name, params)
            keys.append(metric_key(entry["name"], entry["params"]))
    return keys


def test_every_key_the_engine_can_produce_has_a_readable_name_and_description():
    keys = every_key()
    assert len(keys) > len(METRICS)  # the parameters were enumerated
    assert set(READINGS) == set(METRICS)
    for key in keys:
        name = metric_name(key)
        assert name != key and "{" not in name and "_" not in name, key
        assert metric_description(key).endswith("."), key
        base, params = parse_metric_key(key)
        assert metric_key(base, params) == key  # parse_metric_key inverts metric_key
    names = {metric_name(key): key for key in keys}
    assert len(names) == len(keys)  # no two keys read alike


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("pair_alignment(correlation=spearman)", "Spearman with human pair ratings"),
        ("pair_alignment(correlation=pearson)", "Pearson with human pair ratings"),
        ("odd_one_out", "odd-one-out agreement"),
        ("knn(k=5,split=loo)", "k-NN accuracy, k=5, leave-one-out"),
        ("knn(k=5)", "k-NN accuracy, k=5, leave-one-out"),  # a missing parameter: its default
        ("few_shot(k_shot=5,n_way=5)", "few-shot accuracy, 5-way 5-shot"),
        ("not_a_metric(x=1)", "not_a_metric(x=1)"),  # unknown: the key itself
    ],
)
def test_names_read_as_words(key, name):
    assert metric_name(key) == name


@pytest.mark.django_db
def test_board_shows_the_name_with_the_key_on_hover_and_exports_both(client):
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    model = PretrainedModelFactory(name="net-a", modality="text")
    score = ScoreFactory(
        run=RunFactory(dataset=dataset),
        model=model,
        target=target,
        metric_key="knn(k=5,split=loo)",
        value=0.8,
    )
    page = client.get(reverse("evaluation:leaderboard", args=[target.pk])).content.decode()
    assert '<abbr class="metric" title="knn(k=5,split=loo): Share of stimuli' in page
    assert ">k-NN accuracy, k=5, leave-one-out</abbr>" in page
    export = client.get(reverse("evaluation:leaderboard", args=[target.pk]), {"format": "csv"})
    header, row = list(csv.reader(io.StringIO(export.content.decode())))
    assert row[header.index("knn(k=5,split=loo)")] == "0.8"
    name = row[header.index("knn(k=5,split=loo) metric name")]
    assert name == "k-NN accuracy, k=5, leave-one-out"
    api = client.get(reverse("api:score-detail", args=[score.pk])).json()
    assert api["metric_key"] == "knn(k=5,split=loo)"
    assert api["metric_name"] == "k-NN accuracy, k=5, leave-one-out"
    assert api["metric_description"].startswith("Share of stimuli whose k nearest")
