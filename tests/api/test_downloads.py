"""Downloads for notebooks (issue 18): a model's embeddings in every format equal the cached
ones, its similarity matrix equals an independent cosine, a pair target's human data come as
the metrics score them, and the per-pair table reproduces the alignment score."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr

from evaluation import services
from evaluation.judgments import target_data
from evaluation.metrics import pair_alignment_entry
from evaluation.models import EmbeddingSet, Score
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


def body(response) -> bytes:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body(response).decode())))


@pytest.fixture
def minilm_set(scored):  # noqa: F811
    target, _, small = scored
    return target, small, EmbeddingSet.objects.get(model=small)


def test_embeddings_in_every_format_equal_the_cached_ones(api, minilm_set):
    import pyarrow.parquet as pq

    target, model, embedding_set = minilm_set
    cached = np.asarray(embedding_set.load())
    stimuli = list(target.dataset.stimuli.order_by("order").values_list("pk", "name", "label"))
    listed = api.get(f"/api/embeddings/?model={model.pk}").json()["results"]
    assert [e["id"] for e in listed] == [embedding_set.pk]
    url = f"/api/embeddings/{embedding_set.pk}/download/"

    npy = np.load(io.BytesIO(body(api.get(url + "?format=npy"))))
    np.testing.assert_array_equal(npy, cached)
    npz = np.load(io.BytesIO(body(api.get(url + "?format=npz"))))
    np.testing.assert_array_equal(npz["embeddings"], cached)
    assert npz["stimulus_id"].tolist() == [pk for pk, _, _ in stimuli]
    assert npz["name"].tolist() == [name for _, name, _ in stimuli]
    table = pq.read_table(io.BytesIO(body(api.get(url + "?format=parquet"))))
    np.testing.assert_array_equal(
        np.array(table["embedding"].to_pylist(), dtype=np.float32), cached
    )
    assert table["label"].to_pylist() == [label for _, _, label in stimuli]
    csv_rows = rows(api.get(url + "?format=csv"))
    assert csv_rows[0][:4] == ["stimulus_id", "name", "label", "d0"]
    np.testing.assert_array_equal(np.array([r[3:] for r in csv_rows[1:]], dtype=np.float32), cached)


def test_the_similarity_matrix_equals_scipys_cosine(api, minilm_set):
    _, _, embedding_set = minilm_set
    cached = np.asarray(embedding_set.load(), dtype=np.float64)
    expected = 1 - cdist(cached, cached, metric="cosine")
    url = f"/api/embeddings/{embedding_set.pk}/similarity/"
    matrix = np.load(io.BytesIO(body(api.get(url + "?format=npy"))))
    assert matrix.dtype == np.float32 and matrix.shape == (8, 8)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    assert (np.diag(matrix) == 1).all()
    table = rows(api.get(url + "?format=csv"))
    np.testing.assert_allclose(np.array([r[1:] for r in table[1:]], dtype=float), matrix, atol=0)


def test_the_human_target_as_pairs_and_as_a_matrix(api, minilm_set):
    target, _, _ = minilm_set
    pairs = target_data(target).ratings
    table = rows(api.get(f"/api/targets/{target.pk}/human/?shape=pairs"))
    assert table[0] == ["a_id", "b_id", "a", "b", "human", "judgments"]
    assert [float(r[4]) for r in table[1:]] == pairs.mean.tolist()
    matrix = np.load(
        io.BytesIO(body(api.get(f"/api/targets/{target.pk}/human/?shape=matrix&format=npy")))
    )
    assert matrix.shape == (8, 8) and np.allclose(matrix, matrix.T, equal_nan=True)
    assert np.isnan(np.diag(matrix)).all()  # no stimulus was rated with itself
    i, j = np.triu_indices(8, k=1)
    np.testing.assert_allclose(matrix[i, j], 7 - np.abs(i - j))


def test_the_pair_table_reproduces_the_alignment_score(api, minilm_set):
    target, model, _ = minilm_set
    run = services.run_create(
        dataset=target.dataset,
        models=[model],
        metrics=[pair_alignment_entry(correlation="spearman")],
    )
    run_steps(run)
    score = Score.objects.get(run=run, target=target)
    table = rows(api.get(f"/api/targets/{target.pk}/pairs/?models={model.pk}"))
    assert table[0] == ["a_id", "b_id", "a", "b", "human", model.name]
    human = [float(r[4]) for r in table[1:]]
    similarity = [float(r[5]) for r in table[1:]]
    assert spearmanr(similarity, human).statistic == pytest.approx(score.value, abs=1e-9)


def test_downloads_say_what_is_wrong(api, minilm_set):
    target, _, embedding_set = minilm_set
    assert api.get(f"/api/embeddings/{embedding_set.pk}/download/?format=xls").status_code == 400
    assert api.get(f"/api/targets/{target.pk}/human/?shape=cube").status_code == 400
    missing = api.get(f"/api/targets/{target.pk}/pairs/?models=99999")
    assert missing.status_code == 404 and "No model with id 99999" in missing.content.decode()
    labels = target.dataset.targets.get(kind="labels")
    refused = api.get(f"/api/targets/{labels.pk}/human/")
    assert refused.status_code == 400 and "not pair ratings" in refused.content.decode()
    # Raw data are for researchers: the public may read targets, not their human data.
    api.force_authenticate(None)
    assert api.get(f"/api/targets/{target.pk}/").status_code == 200
    assert api.get(f"/api/targets/{target.pk}/human/").status_code in (401, 403)
    assert api.get(f"/api/embeddings/{embedding_set.pk}/download/").status_code in (401, 403)


def test_the_pages_link_the_downloads_for_researchers(client, researcher, minilm_set):
    target, model, embedding_set = minilm_set
    client.force_login(researcher)
    page = client.get(model.get_absolute_url()).content.decode()
    link = f"/api/embeddings/{embedding_set.pk}/download/?format=parquet"
    assert link in page
    assert client.get(link).status_code == 200  # the browser's session is enough
    board = client.get(target.get_absolute_url()).content.decode()
    pairs_link = f"/api/targets/{target.pk}/pairs/?models="
    assert pairs_link in board and "per pair, with" in board
    href = board.split(pairs_link)[1].split('"')[0]
    assert client.get(pairs_link + href).status_code == 200
    client.logout()
    assert "Data for a notebook" not in client.get(target.get_absolute_url()).content.decode()
