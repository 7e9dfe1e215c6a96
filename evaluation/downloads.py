"""Data for notebooks: a model's embeddings of a dataset, its similarity matrix, a human
target as a pair table or a matrix, and the per-pair table (human value next to each model's
similarity). One home for what each download holds, used by the web pages, the API and
``manage.py export_data``.

Every download is a ``Download``: a file name, a content type and its bytes as an iterator,
produced a block at a time (a 20,000-stimulus similarity matrix is 1.6 GB as float32 and is
never held whole). Rows follow the dataset's stimulus order; stimulus ids, names and labels
come with them so a DataFrame can be joined back to the catalogue.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from django.core.exceptions import ValidationError

from evaluation.judgments import target_data
from evaluation.metrics import PairsData
from evaluation.models import (
    EmbeddingSet,
    PretrainedModel,
    Stimulus,
    Target,
    TargetKind,
    ValueMeaning,
)
from evaluation.storage import Readable

EMBEDDING_FORMATS = ("npy", "npz", "parquet", "csv")
MATRIX_FORMATS = ("npy", "csv")
HUMAN_SHAPES = ("pairs", "matrix")
ROWS_PER_BLOCK = 1024  # similarity rows computed and sent at a time
CONTENT_TYPES = {
    "npy": "application/octet-stream",
    "npz": "application/zip",
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8",
}


@dataclass(frozen=True)
class Download:
    filename: str
    content_type: str
    chunks: Iterable[bytes]


def _stimuli(dataset_id: int) -> list[tuple[int, str, str]]:
    return list(
        Stimulus.objects.filter(dataset_id=dataset_id)
        .order_by("order")
        .values_list("pk", "name", "label")
    )


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValidationError({what: f"Unknown {what} {value!r}; use {', '.join(allowed)}."})


def _check_rows(rows: int, stimuli: int) -> None:
    if rows != stimuli:
        raise ValidationError(
            f"The cached embeddings hold {rows} rows but the dataset has {stimuli} "
            "stimuli; the dataset changed. Run the model on it again."
        )


def _base_name(embedding_set: EmbeddingSet) -> str:
    layer = embedding_set.layer.replace("/", "_").replace(" ", "_")
    return f"embeddings-{embedding_set.pk}-{embedding_set.model.name}-{layer}".replace(" ", "_")


# --- Embeddings ---------------------------------------------------------------------------------
def embeddings_download(embedding_set: EmbeddingSet, fmt: str) -> Download:
    """The cached embeddings, one row per stimulus in dataset order (float32).

    npy: the array alone (the cached file itself); npz: ``embeddings``, ``stimulus_id``,
    ``name``, ``label``; parquet: columns stimulus_id, name, label and ``embedding`` (a
    fixed-size list of float32); csv: stimulus_id, name, label, d0, d1, ..."""
    _check(fmt, EMBEDDING_FORMATS, "format")
    stimuli = _stimuli(embedding_set.dataset_id)
    name = f"{_base_name(embedding_set)}.{fmt}"
    if fmt == "npy":  # the stored file itself, streamed from the store: only its header read
        _check_rows(embedding_set.stored_shape()[0], len(stimuli))
        return Download(name, CONTENT_TYPES[fmt], _file_chunks(embedding_set.open_stream()))
    vectors = embedding_set.load()
    _check_rows(len(vectors), len(stimuli))
    if fmt == "csv":
        return Download(name, CONTENT_TYPES[fmt], _embedding_csv(vectors, stimuli))
    spool = tempfile.TemporaryFile()
    if fmt == "npz":
        ids, names, labels = (np.array(column) for column in zip(*stimuli, strict=True))
        np.savez(spool, embeddings=np.asarray(vectors), stimulus_id=ids, name=names, label=labels)
    else:
        _write_parquet(spool, vectors, stimuli)
    spool.seek(0)
    return Download(name, CONTENT_TYPES[fmt], _file_chunks(spool))


def _embedding_csv(vectors: np.ndarray, stimuli: list[tuple[int, str, str]]) -> Iterator[bytes]:
    header = ["stimulus_id", "name", "label", *(f"d{k}" for k in range(vectors.shape[1]))]
    yield _csv_line(header)
    for start in range(0, len(vectors), ROWS_PER_BLOCK):
        block = np.asarray(vectors[start : start + ROWS_PER_BLOCK])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for (pk, name, label), row in zip(stimuli[start : start + len(block)], block, strict=True):
            writer.writerow([pk, name, label, *(repr(float(v)) for v in row)])
        yield buffer.getvalue().encode()


def _write_parquet(
    out: IO[bytes], vectors: np.ndarray, stimuli: list[tuple[int, str, str]]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    schema = pa.schema(
        [
            ("stimulus_id", pa.int64()),
            ("name", pa.string()),
            ("label", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )
    with pq.ParquetWriter(out, schema) as writer:
        for start in range(0, len(vectors), ROWS_PER_BLOCK * 8):
            block = np.asarray(vectors[start : start + ROWS_PER_BLOCK * 8], dtype=np.float32)
            rows = stimuli[start : start + len(block)]
            flat = pa.array(block.reshape(-1), type=pa.float32())
            writer.write_table(
                pa.table(
                    {
                        "stimulus_id": [pk for pk, _, _ in rows],
                        "name": [name for _, name, _ in rows],
                        "label": [label for _, _, label in rows],
                        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                    },
                    schema=schema,
                )
            )


# --- A model's similarity matrix ----------------------------------------------------------------
def similarity_download(embedding_set: EmbeddingSet, fmt: str) -> Download:
    """Cosine similarity between every two stimuli (n x n, float32, dataset order); the
    diagonal is 1 (0 for an all-zero embedding). csv: a header of stimulus names, each row
    starting with its stimulus's name."""
    _check(fmt, MATRIX_FORMATS, "format")
    vectors = np.asarray(embedding_set.load(), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    names = [name for _, name, _ in _stimuli(embedding_set.dataset_id)]

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, len(unit), ROWS_PER_BLOCK):
            block = unit[start : start + ROWS_PER_BLOCK] @ unit.T
            rows = np.arange(len(block))
            block[rows, start + rows] = (norms[start : start + len(block), 0] > 0).astype(
                np.float32
            )
            yield block

    base = f"similarity-{_base_name(embedding_set).removeprefix('embeddings-')}"
    return _matrix_download(base, fmt, len(unit), blocks(), names)


def _matrix_download(
    base: str, fmt: str, n: int, blocks: Iterator[np.ndarray], names: list[str]
) -> Download:
    if fmt == "npy":
        return Download(f"{base}.npy", CONTENT_TYPES["npy"], _npy_chunks((n, n), blocks))
    return Download(f"{base}.csv", CONTENT_TYPES["csv"], _matrix_csv(blocks, names))


def _npy_chunks(shape: tuple[int, int], blocks: Iterator[np.ndarray]) -> Iterator[bytes]:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    yield header.getvalue()
    for block in blocks:
        yield np.ascontiguousarray(block, dtype="<f4").tobytes()


def _matrix_csv(blocks: Iterator[np.ndarray], names: list[str]) -> Iterator[bytes]:
    yield _csv_line(["", *names])
    row = 0
    for block in blocks:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for values in block:
            writer.writerow([names[row], *("" if np.isnan(v) else repr(float(v)) for v in values)])
            row += 1
        yield buffer.getvalue().encode()


# --- Human targets ------------------------------------------------------------------------------
def _published(target: Target) -> tuple[float, str]:
    """The sign that turns scored values back into published ones, and the column's name:
    dissimilarities are negated for scoring, and come back as published."""
    judgments = target.judgments
    if judgments is not None and judgments.value_meaning == ValueMeaning.DISSIMILARITY:
        return -1.0, "human_dissimilarity"
    return 1.0, "human"


def _pairs_of(target: Target) -> PairsData:
    if target.kind != TargetKind.PAIRS:
        raise ValidationError(
            f"{target.name} holds {TargetKind(target.kind).label.lower()}, not pair ratings: "
            "export its judgments instead (API: /api/judgments/<id>/export/)."
        )
    data = target_data(target)
    assert isinstance(data, PairsData)
    return data


def human_download(target: Target, *, shape: str, fmt: str = "csv") -> Download:
    """A pair target as the metrics score it: ``pairs`` (one row per unit: a pair's mean, or
    each row as published; with the number of judgments) or ``matrix`` (n x n in dataset
    order, the mean rating per pair, symmetric, NaN where no pair was judged)."""
    _check(shape, HUMAN_SHAPES, "shape")
    pairs = _pairs_of(target).ratings
    sign, column = _published(target)
    stimuli = _stimuli(target.dataset_id)
    base = f"human-{target.pk}-{shape}"
    if shape == "pairs":
        _check(fmt, ("csv",), "format")
        rows = (
            [stimuli[i][0], stimuli[j][0], stimuli[i][1], stimuli[j][1], repr(float(sign * m)),
             int(c)]
            for i, j, m, c in zip(pairs.i, pairs.j, pairs.mean, pairs.count, strict=True)
        )  # fmt: skip
        header = ["a_id", "b_id", "a", "b", column, "judgments"]
        return Download(f"{base}.csv", CONTENT_TYPES["csv"], _csv_chunks(header, rows))
    _check(fmt, MATRIX_FORMATS, "format")
    n = len(stimuli)
    sums, counts = np.zeros((n, n)), np.zeros((n, n))
    # Both triangles (a self-pair once); a row-level target's rows of a pair weighted alike.
    other = pairs.i != pairs.j
    rows, cols = np.r_[pairs.i, pairs.j[other]], np.r_[pairs.j, pairs.i[other]]
    weights = np.r_[pairs.count, pairs.count[other]].astype(float)
    np.add.at(sums, (rows, cols), sign * np.r_[pairs.mean, pairs.mean[other]] * weights)
    np.add.at(counts, (rows, cols), weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (sums / counts).astype(np.float32)
    blocks = (matrix[s : s + ROWS_PER_BLOCK] for s in range(0, n, ROWS_PER_BLOCK))
    return _matrix_download(base, fmt, n, blocks, [name for _, name, _ in stimuli])


def pair_table_download(target: Target, models: Sequence[PretrainedModel]) -> Download:
    """Per pair of the target: stimulus a and b, the human value and each model's cosine
    similarity (from its cached embeddings at its default layer), as CSV."""
    pairs = _pairs_of(target).ratings
    sign, column_name = _published(target)
    stimuli = _stimuli(target.dataset_id)
    columns = []
    for model in models:
        embedding_set = model_embeddings(model, target.dataset_id)
        vectors = np.asarray(embedding_set.load(), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        unit = np.divide(
            vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0
        )
        similarity = np.einsum("ij,ij->i", unit[pairs.i], unit[pairs.j])
        similarity[pairs.i == pairs.j] = norms[pairs.i[pairs.i == pairs.j]] > 0
        columns.append(similarity)
    header = ["a_id", "b_id", "a", "b", column_name, *(model.name for model in models)]
    rows = (
        [stimuli[i][0], stimuli[j][0], stimuli[i][1], stimuli[j][1], repr(float(sign * m)),
         *(repr(float(column[k])) for column in columns)]
        for k, (i, j, m) in enumerate(zip(pairs.i, pairs.j, pairs.mean, strict=True))
    )  # fmt: skip
    return Download(f"pairs-{target.pk}.csv", CONTENT_TYPES["csv"], _csv_chunks(header, rows))


def model_embeddings(model: PretrainedModel, dataset_id: int, layer: str = "") -> EmbeddingSet:
    """The model's newest cached embeddings of the dataset at ``layer`` (its default)."""
    layer = layer or model.default_layer
    found = (
        EmbeddingSet.objects.filter(model=model, dataset_id=dataset_id, layer=layer)
        .order_by("-created_at")
        .first()
    )
    if found is None or not found.is_stored():
        raise ValidationError(
            {"models": f"{model.name} has no cached embeddings of this dataset at layer "
             f"{layer!r}: run it on the dataset first."}
        )  # fmt: skip
    return found


# --- Bytes --------------------------------------------------------------------------------------
def _csv_line(cells: Sequence[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode()


def _csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    yield _csv_line(header)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for count, row in enumerate(rows, start=1):
        writer.writerow(row)
        if count % 5000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _file_chunks(handle: IO[bytes] | Readable) -> Iterator[bytes]:
    try:
        while chunk := handle.read(1 << 20):
            yield chunk
    finally:
        handle.close()
