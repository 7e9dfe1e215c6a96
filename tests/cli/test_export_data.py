"""manage.py export_data writes the same files as the API's downloads (issue 18)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from django.core.management.base import CommandError

from evaluation.judgments import target_data
from tests.api.test_downloads import minilm_set  # noqa: F401 (fixture)
from tests.cli.conftest import cli
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def test_embeddings_similarity_human_and_pairs_files(minilm_set, tmp_path):  # noqa: F811
    target, model, embedding_set = minilm_set
    out = tmp_path / "minilm.npz"
    printed = cli("export_data", "embeddings", "--model", model.name, "--dataset",
                  str(target.dataset_id), "-o", str(out))  # fmt: skip
    assert f"Wrote {out}" in printed.stdout
    np.testing.assert_array_equal(np.load(out)["embeddings"], embedding_set.load())

    similarity = tmp_path / "similarity.npy"
    cli("export_data", "similarity", "--model", model.name, "--dataset", str(target.dataset_id),
        "-o", str(similarity))  # fmt: skip
    assert np.load(similarity).shape == (8, 8)

    people = tmp_path / "people.npy"
    cli("export_data", "human", "--target", str(target.pk), "--shape", "matrix", "-o", str(people))
    i, j = np.triu_indices(8, k=1)
    np.testing.assert_allclose(np.load(people)[i, j], 7 - np.abs(i - j))

    pairs = tmp_path / "pairs.csv"
    cli(
        "export_data", "pairs", "--target", str(target.pk), "--models", model.name, "-o", str(pairs)
    )
    rows = list(csv.reader(pairs.open()))
    assert rows[0][-1] == model.name
    assert len(rows) - 1 == len(target_data(target).ratings.mean)


def test_bad_requests_name_the_problem_and_write_nothing(minilm_set, tmp_path):  # noqa: F811
    target, model, _ = minilm_set
    tmp_path = tmp_path / "out"  # beside the test's own media folders
    tmp_path.mkdir()
    out = tmp_path / "x.xls"
    with pytest.raises(CommandError, match="Unknown format 'xls'; use npy, npz, parquet, csv"):
        cli("export_data", "embeddings", "--model", model.name, "--dataset",
            str(target.dataset_id), "-o", str(out))  # fmt: skip
    with pytest.raises(CommandError, match="embeddings needs --model and --dataset"):
        cli("export_data", "embeddings", "-o", str(tmp_path / "a.npy"))
    labels = target.dataset.targets.get(kind="labels")
    with pytest.raises(CommandError, match="not pair ratings"):
        cli("export_data", "human", "--target", str(labels.pk), "-o", str(tmp_path / "h.csv"))
    assert list(tmp_path.iterdir()) == []
