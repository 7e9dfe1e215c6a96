"""Embeddings computed elsewhere, imported as a model: private code, other frameworks,
brain- or behaviour-derived dimensions (SPoSE, VICE). Runs score them like any model's
cached embeddings (no forward pass); leaderboards mark the model "imported".

Formats, by file name:
- ``.npy``: one 2-D array (rows = stimuli), layer ``embedding``;
- ``.npz``: one 2-D array per layer (its key is the layer's name), and optionally the row ids
  under ``ids`` (or ``stimulus_id``, ``name``, ``names``, ``file_names``);
- ``.txt``: thingsvision's ``features.txt`` (``np.savetxt``: one row of numbers per stimulus);
- ``.hdf5``/``.h5``: thingsvision's ``features.hdf5``: each 2-D dataset a layer (``features``),
  ids from a 1-D dataset named like the npz's;
- ``.mat``: thingsvision's ``features.mat`` (MATLAB 5 or 7.3): each 2-D numeric variable a
  layer, ids from a variable named like the npz's;
- ``.parquet``: an id column (``stimulus_id``, ``id``, ``name`` or ``stimulus``) and either a
  list column per layer (``embedding``) or numeric columns (one layer, ``embedding``);
- ``.csv``/``.tsv``: an id column as for parquet, then one numeric column per dimension.

Rows are matched to the dataset's stimuli by the ids (a stimulus id, or its name: ``auto``
takes whichever every id reaches exactly one stimulus by), or, without ids, by order (a
separate ids file, one per line, e.g. thingsvision's ``file_names.txt``, may give them).
Every stimulus must be present exactly once, every value finite, each layer one
dimensionality; the first bad rows are named and nothing is stored. Files are read through
memory maps and written a block of rows at a time, so a 100,000 x 768 file is never held
twice in memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from core.uploads import check_upload_size
from evaluation import storage
from evaluation.engine.errors import StorageError
from evaluation.engine.fingerprint import embedding_fingerprint
from evaluation.engine.storage import writing
from evaluation.imports.reading import ImportProblem, csv_cells, csv_reader
from evaluation.imports.staging import copy_upload
from evaluation.models import (
    Dataset,
    EmbeddingImport,
    EmbeddingSet,
    ModelSource,
    PretrainedModel,
)
from evaluation.services.failures import internal_error
from evaluation.services.queue import IMPORT_TASK, send

FORMATS = (".npy", ".npz", ".txt", ".hdf5", ".h5", ".mat", ".parquet", ".csv", ".tsv")
MATCH_RULES = ("auto", "id", "name", "order")
ID_KEYS = ("stimulus_id", "ids", "id", "name", "names", "file_names", "stimulus")
DEFAULT_LAYER = "embedding"
ROWS_PER_BLOCK = 4096
MAX_LISTED = 5

logger = logging.getLogger(__name__)


@dataclass
class RawEmbeddings:
    """What a file holds: arrays per layer (possibly memory-mapped) and the row ids."""

    layers: dict[str, Any]
    ids: list[str] | None
    format: str


# --- Entry point ----------------------------------------------------------------------------
def embeddings_import(
    *,
    name: str,
    dataset: Dataset,
    file: IO[bytes],
    ids_file: IO[bytes] | None = None,
    match: str = "auto",
    provenance: str = "",
    link: str = "",
    licence: str = "",
    file_name: str = "",
    progress: Callable[[int, int], None] | None = None,
    created_by: Any = None,
) -> PretrainedModel:
    """Store the file's embeddings of ``dataset`` as a new model of source ``imported``,
    one EmbeddingSet per layer; raises ValidationError and stores nothing on bad input.
    ``file_name`` is the name the user gave the file (where ``file`` is a staged copy);
    ``progress(rows written, rows in all)`` is told as each block is written."""
    name, link = name.strip(), link.strip()
    _check_arguments(name, match, link)
    check_upload_size(file)
    with _on_disk(file) as path:
        try:
            original = file_name or str(getattr(file, "name", "") or path.name)
            raw = read_embeddings(path, original_name=original)
            if ids_file is not None:
                raw.ids = read_ids(ids_file)
            order = match_rows(raw, dataset, match)
        except ImportProblem as exc:
            raise ValidationError({"file": str(exc)}) from None
        matched_by = _matched_by(raw, match)
        written: list[Path | str] = []
        try:
            with transaction.atomic():
                model = _model_create(name, dataset, raw, matched_by, provenance, link, licence,
                                      created_by, original)  # fmt: skip
                total = len(order) * len(raw.layers)
                for done, (layer, array) in enumerate(raw.layers.items()):
                    report = _layer_progress(progress, done * len(order), total)
                    _embedding_set(model, dataset, layer, array, order, written, report)
            return model
        except ImportProblem as exc:
            _remove(written)
            raise ValidationError({"file": str(exc)}) from None
        except BaseException:
            _remove(written)
            raise


def _check_arguments(name: str, match: str, link: str) -> None:
    if link and not link.lower().startswith(("https://", "http://")):
        raise ValidationError({"link": "A link starts with https:// or http://."})
    if not name:
        raise ValidationError({"name": "Give the imported model a name."})
    if PretrainedModel.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A model called {name!r} is already registered."})
    if match not in MATCH_RULES:
        raise ValidationError(
            {"match": f"Unknown match rule {match!r}; use one of {', '.join(MATCH_RULES)}."}
        )


@contextmanager
def _on_disk(file: IO[bytes]) -> Iterator[Path]:
    """The upload as a file on disk (memory maps need one): its own path where it has one
    (Django spools large uploads to disk; the CLI opens the user's file), else a copy."""
    own = getattr(file, "temporary_file_path", None)
    name = getattr(file, "name", "") or ""
    if callable(own):
        yield Path(own())
        return
    if name and Path(name).is_file():
        yield Path(name)
        return
    copy = Path(settings.MEDIA_ROOT) / _staged_name(file)
    try:
        copy_upload(file, copy, doing="spool the upload")
        yield copy
    finally:
        copy.unlink(missing_ok=True)


# --- Reading each format ----------------------------------------------------------------------
def read_embeddings(path: Path, *, original_name: str = "") -> RawEmbeddings:
    suffix = PurePosixPath(original_name or path.name).suffix.lower()
    readers: dict[str, Callable[[Path], RawEmbeddings]] = {
        ".npy": _read_npy,
        ".npz": _read_npz,
        ".txt": _read_txt,
        ".hdf5": _read_hdf5,
        ".h5": _read_hdf5,
        ".mat": _read_mat,
        ".parquet": _read_parquet,
        ".csv": _read_table,
        ".tsv": _read_table,
    }
    if suffix not in readers:
        raise ImportProblem(
            f"Embeddings in a {suffix or 'nameless'} file cannot be read; use one of "
            f"{', '.join(FORMATS)}."
        )
    raw = readers[suffix](path)
    if not raw.layers:
        raise ImportProblem("The file holds no 2-D array of embeddings.")
    for layer, array in raw.layers.items():
        _check_matrix(layer, array)
    return raw


def _check_matrix(layer: str, array: Any) -> None:
    shape = tuple(array.shape)
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ImportProblem(
            f"Layer {layer!r} is an array of shape {shape}; embeddings are rows x dimensions."
        )
    if not np.issubdtype(np.dtype(array.dtype), np.number) or np.issubdtype(
        np.dtype(array.dtype), np.complexfloating
    ):
        raise ImportProblem(f"Layer {layer!r} holds {array.dtype} values, not real numbers.")


def _read_npy(path: Path) -> RawEmbeddings:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ImportProblem(f"The .npy file cannot be read: {exc}.") from None
    return RawEmbeddings({DEFAULT_LAYER: array}, None, "npy")


def _read_npz(path: Path) -> RawEmbeddings:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ImportProblem(f"The .npz file cannot be read: {exc}.") from None
    # Each 2-D array is a layer; of the 1-D ones (ids, names, labels), the ids are the first
    # in ID_KEYS' order present (a Likeness export holds stimulus_id, name and label).
    one_d = {key.lower(): key for key in archive.files if archive[key].ndim == 1}
    id_key = next((one_d[key] for key in ID_KEYS if key in one_d), None)
    ids = [str(x) for x in archive[id_key].tolist()] if id_key else None
    layers = {key: archive[key] for key in archive.files if archive[key].ndim != 1}
    return RawEmbeddings(layers, ids, "npz")


def _read_txt(path: Path) -> RawEmbeddings:
    try:
        array = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise ImportProblem(f"The .txt file is not a table of numbers: {exc}.") from None
    return RawEmbeddings({DEFAULT_LAYER: array}, None, "txt")


def _read_hdf5(path: Path) -> RawEmbeddings:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ImportProblem(f"The file is not HDF5: {exc}.") from None
    layers: dict[str, Any] = {}
    ids = None
    found: list[str] = []

    def visit(name: str, item: Any) -> None:
        nonlocal ids
        if not isinstance(item, h5py.Dataset):
            return
        found.append(name)
        if item.ndim == 1 and PurePosixPath(name).name.lower() in ID_KEYS and ids is None:
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in item[()]]
        elif item.ndim == 2 and item.dtype.kind in "fiu":
            layers[name] = item

    handle.visititems(visit)
    if not layers:
        raise ImportProblem(
            f"The HDF5 file has no 2-D numeric dataset (it holds {', '.join(found) or 'nothing'});"
            " thingsvision writes the embeddings as 'features'."
        )
    return RawEmbeddings(layers, ids, "hdf5")


def _read_mat(path: Path) -> RawEmbeddings:
    from scipy.io import loadmat

    try:
        variables = loadmat(path)
    except NotImplementedError:  # MATLAB 7.3 files are HDF5
        raw = _read_hdf5(path)
        raw.format = "mat (7.3)"
        return raw
    except (ValueError, OSError) as exc:
        raise ImportProblem(f"The .mat file cannot be read: {exc}.") from None
    names = [key for key in variables if not key.startswith("__")]
    layers = {
        key: np.asarray(variables[key])
        for key in names
        if np.asarray(variables[key]).ndim == 2 and np.asarray(variables[key]).dtype.kind in "fiu"
        and key.lower() not in ID_KEYS
    }  # fmt: skip
    if not layers:
        raise ImportProblem(
            f"The .mat file has no 2-D numeric variable (it holds {', '.join(names) or 'nothing'});"
            " thingsvision writes the embeddings as 'features'."
        )
    ids = None
    for key in names:
        if key.lower() in ID_KEYS:
            ids = [str(np.asarray(x).squeeze()).strip() for x in np.asarray(variables[key]).ravel()]
            break
    return RawEmbeddings(layers, ids, "mat")


def _read_parquet(path: Path) -> RawEmbeddings:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ImportProblem(f"The .parquet file cannot be read: {exc}.") from None
    id_column = _id_column(table.column_names)
    ids = [str(x) for x in table[id_column].to_pylist()] if id_column else None
    layers: dict[str, Any] = {}
    numeric = []
    for column in table.column_names:
        if column == id_column:
            continue
        kind = table.schema.field(column).type
        if (
            pa.types.is_list(kind)
            or pa.types.is_fixed_size_list(kind)
            or pa.types.is_large_list(kind)
        ):
            layers[column] = _list_column(table[column], column)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            numeric.append(column)
    if numeric:
        layers[DEFAULT_LAYER] = np.column_stack(
            [table[c].to_numpy(zero_copy_only=False) for c in numeric]
        ).astype(np.float32)
    return RawEmbeddings(layers, ids, "parquet")


def _list_column(column: Any, name: str) -> np.ndarray:
    rows = column.to_pylist()
    widths = [len(r) if r is not None else 0 for r in rows]
    if len(set(widths)) > 1:
        ragged = next(k for k, w in enumerate(widths) if w != widths[0])
        raise ImportProblem(
            f"Column {name!r}: row {ragged + 1} has {widths[ragged]} values, row 1 has "
            f"{widths[0]}; every row of a layer has the same dimensionality."
        )
    return np.asarray(rows, dtype=np.float32)


def _id_column(columns: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next(
        (lowered[key] for key in ("stimulus_id", "id", "name", "stimulus") if key in lowered), None
    )


# Columns of a table that describe a stimulus rather than hold a dimension.
DESCRIPTIVE_COLUMNS = (*ID_KEYS, "label", "split")


def _read_table(path: Path) -> RawEmbeddings:
    """An id column (the first of ID_KEYS present), descriptive columns (names, labels) set
    aside, every other column a dimension."""
    with open(path, "rb") as handle:
        reader = csv_reader(handle)
        rows = csv_cells(reader, 10_000_000)
        _, header = next(rows, (0, []))
        id_column = _id_column(header)
        if id_column is None:
            raise ImportProblem(
                "The table has no id column (stimulus_id, id, name or stimulus) in its header; "
                f"its first columns are {', '.join(repr(h) for h in header[:5])}."
            )
        at = header.index(id_column)
        dims = [k for k, h in enumerate(header) if h.strip().lower() not in DESCRIPTIVE_COLUMNS]
        ids, values = [], []
        for line, cells in rows:
            if len(cells) != len(header):
                raise ImportProblem(
                    f"Row {line} has {len(cells)} fields, the header {len(header)}; every row "
                    "holds an id and the same number of dimensions."
                )
            ids.append(cells[at].strip())
            try:
                values.append([float(cells[k]) for k in dims])
            except ValueError:
                bad = next(cells[k] for k in dims if not _is_number(cells[k]))
                raise ImportProblem(f"Row {line}: {bad!r} is not a number.") from None
    array = np.asarray(values, dtype=np.float32).reshape(len(values), len(dims))
    return RawEmbeddings({DEFAULT_LAYER: array}, ids, "csv")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_ids(upload: IO[bytes]) -> list[str]:
    """Row ids, one per line (thingsvision's file_names.txt): blank lines ignored."""
    text = upload.read().decode("utf-8-sig", errors="strict")
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- Matching rows to stimuli -----------------------------------------------------------------
def match_rows(raw: RawEmbeddings, dataset: Dataset, match: str) -> np.ndarray:
    """For each stimulus in dataset order, the file's row that holds it."""
    counts = {layer: int(array.shape[0]) for layer, array in raw.layers.items()}
    if len(set(counts.values())) > 1:
        raise ImportProblem(
            "The layers have different numbers of rows: "
            + ", ".join(f"{layer} {n}" for layer, n in counts.items())
            + "."
        )
    rows = next(iter(counts.values()))
    stimuli = list(dataset.stimuli.order_by("order").values_list("pk", "name"))
    if raw.ids is None or match == "order":
        if rows != len(stimuli):
            raise ImportProblem(
                f"The file has {rows} rows and {dataset} has {len(stimuli)} stimuli; without "
                "ids, rows are matched in order and must be as many."
            )
        return np.arange(rows)
    if len(raw.ids) != rows:
        raise ImportProblem(f"There are {len(raw.ids)} ids for {rows} rows.")
    return _order_by_ids(raw.ids, stimuli, match)


def _order_by_ids(ids: list[str], stimuli: list[tuple[int, str]], match: str) -> np.ndarray:
    rules = ("id", "name") if match == "auto" else (match,)
    problems = []
    for rule in rules:
        keys = {
            str(pk) if rule == "id" else _name_key(name): k for k, (pk, name) in enumerate(stimuli)
        }
        position = [keys.get(str(i) if rule == "id" else _name_key(i)) for i in ids]
        unknown = [k for k, p in enumerate(position) if p is None]
        if unknown:
            problems.append(
                f"by {rule}: row(s) {_rows(unknown)} ({', '.join(repr(ids[k]) for k in unknown[:MAX_LISTED])}) "
                "reach no stimulus"
            )
            continue
        seen: dict[int, int] = {}
        for row, stimulus in enumerate(position):
            assert stimulus is not None
            if stimulus in seen:
                raise ImportProblem(
                    f"Rows {seen[stimulus] + 1} and {row + 1} both hold stimulus "
                    f"{stimuli[stimulus][1]!r} (id {ids[row]!r}); each stimulus once."
                )
            seen[stimulus] = row
        missing = [k for k in range(len(stimuli)) if k not in seen]
        if missing:
            names = ", ".join(repr(stimuli[k][1]) for k in missing[:MAX_LISTED])
            raise ImportProblem(
                f"{len(missing)} stimuli of the dataset have no row (matched by {rule}): {names}"
                + (" ..." if len(missing) > MAX_LISTED else "")
                + "; every stimulus needs its embedding."
            )
        return np.array([seen[k] for k in range(len(stimuli))])
    raise ImportProblem("The ids match no stimuli: " + "; ".join(problems) + ".")


def _name_key(name: str) -> str:
    """A name as written, or its last path part (thingsvision writes file paths)."""
    return PurePosixPath(str(name).replace("\\", "/")).name


def _matched_by(raw: RawEmbeddings, match: str) -> str:
    return "order" if raw.ids is None or match == "order" else f"ids ({match})"


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(k + 1) for k in rows[:MAX_LISTED])
    return shown + (f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else "")


# --- Storing ------------------------------------------------------------------------------------
def _model_create(
    name: str,
    dataset: Dataset,
    raw: RawEmbeddings,
    matched_by: str,
    provenance: str,
    link: str,
    licence: str,
    created_by: Any,
    file_name: str,
) -> PretrainedModel:
    first = next(iter(raw.layers))
    return PretrainedModel.objects.create(
        name=name,
        source=ModelSource.IMPORTED,
        identifier=f"imported:{name}"[:500],
        modality=dataset.modality,
        default_layer=first,
        layers=[{"name": layer, "shape": [int(a.shape[1])]} for layer, a in raw.layers.items()],
        embedding_size=int(raw.layers[first].shape[1]),
        pooling="imported",
        description=provenance,
        provenance={
            "text": provenance,
            "link": link,
            "licence": licence,
            "file": PurePosixPath(file_name.replace("\\", "/")).name,
            "format": raw.format,
            "matched_by": matched_by,
            "dataset": dataset.pk,
        },
        inspection_sent_at=timezone.now(),  # nothing to inspect: its layers are listed here
        created_by=created_by,
    )


def _embedding_set(
    model: PretrainedModel,
    dataset: Dataset,
    layer: str,
    array: Any,
    order: np.ndarray,
    written: list[Path | str],
    progress: Callable[[int], None] | None = None,
) -> EmbeddingSet:
    """Write the layer's rows in dataset order as float32 .npy (a block at a time, checking
    each value is finite), then store it under a fingerprint of its content and record it.
    ``written`` gets each file made: a local Path, or a stored file's name."""
    count, dim = len(order), int(array.shape[1])
    scratch = storage.scratch_folder(storage.EMBEDDINGS)
    place = storage.scratch_place(storage.EMBEDDINGS)
    with writing(scratch, place=place, doing="store the imported embeddings"):
        scratch.mkdir(parents=True, exist_ok=True)
        staging = scratch / f"{uuid.uuid4().hex}.npy"  # stored when whole
        written.append(staging)
        with staging.open("wb") as out:  # plain writes: no dirty mapped pages in memory
            np.lib.format.write_array_header_1_0(
                out, {"descr": "<f4", "fortran_order": False, "shape": (count, dim)}
            )
            digest = hashlib.sha256()
            for start in range(0, count, ROWS_PER_BLOCK):
                rows = order[start : start + ROWS_PER_BLOCK]
                block = np.asarray(array[np.sort(rows)] if _needs_sorted(array) else array[rows])
                if _needs_sorted(array):  # h5py reads increasing indices only
                    block = block[np.argsort(np.argsort(rows))]
                block = block.astype(np.float32, copy=False)
                bad = ~np.isfinite(block).all(axis=1)
                if bad.any():
                    first = int(rows[int(np.argmax(bad))])
                    raise ImportProblem(
                        f"Layer {layer!r}, row {first + 1}: NaN or infinite values; every value of "
                        "an embedding must be a finite number."
                    )
                data = np.ascontiguousarray(block, dtype="<f4").tobytes()
                out.write(data)
                digest.update(data)
                if progress is not None:
                    progress(start + len(block))
    fingerprint = embedding_fingerprint(
        model={"source": ModelSource.IMPORTED, "identifier": model.identifier, "weights": ""},
        weights_id=f"sha256:{digest.hexdigest()}",
        layer=layer,
        pooling="imported",
        preprocessing={},
        precision="fp32",
        dataset_hash=dataset.content_hash,
    )
    relative = f"{fingerprint[:2]}/{fingerprint}.npy"
    written.append(relative)
    storage.store_file(storage.EMBEDDINGS, relative, staging)
    return EmbeddingSet.objects.create(
        fingerprint=fingerprint,
        model=model,
        dataset=dataset,
        layer=layer,
        pooling="imported",
        precision="fp32",
        weights_id=f"sha256:{digest.hexdigest()}",
        preprocessing={"imported": model.provenance.get("file", "")},
        relative_path=relative,
        count=count,
        dim=dim,
        extraction_seconds=0.0,
    )


def _layer_progress(
    progress: Callable[[int, int], None] | None, before: int, total: int
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda rows: progress(before + rows, total)


def _needs_sorted(array: Any) -> bool:
    return type(array).__module__.startswith("h5py")


def _remove(written: list[Path | str]) -> None:
    """Remove the files a failed import made (the failure, not this, is what is raised)."""
    for file in written:
        if isinstance(file, Path):
            file.unlink(missing_ok=True)
            continue
        try:
            storage.delete(storage.EMBEDDINGS, file)
        except StorageError as exc:
            logger.warning("A failed import's file %s stays in the store: %s", file, exc)


# --- Through a worker (the web form and the API) ---------------------------------------------
STAGED_FOLDER = "tmp/embedding-imports"
PROGRESS_REPORT_SECONDS = 0.5


def embeddings_import_queue(data: Mapping[str, Any], *, created_by: Any = None) -> EmbeddingImport:
    """Check what can be checked at once, stream the upload (and its ids file) to disk, and
    hand the reading to a worker; the web process never reads the embeddings."""
    name, link, match = (
        data["name"].strip(),
        (data.get("link") or "").strip(),
        data.get("match") or "auto",
    )
    _check_arguments(name, match, link)
    check_upload_size(data["file"])
    staged = [_stage(data["file"])]
    try:
        if data.get("ids_file"):
            staged.append(_stage(data["ids_file"]))
        with transaction.atomic():
            job = EmbeddingImport.objects.create(
                name=name, dataset=data["dataset"], match=match,
                provenance=data.get("provenance", ""), link=link, licence=data.get("licence", ""),
                file_name=PurePosixPath(str(data["file"].name)).name[:300],
                staged_path=staged[0], ids_path=staged[1] if len(staged) > 1 else "",
                created_by=created_by,
            )  # fmt: skip
            transaction.on_commit(lambda: send(IMPORT_TASK, job.pk))
        return job
    except BaseException:
        _remove_staged(staged, "a refused embeddings import")
        raise


def _stage(upload: Any) -> str:
    """Store an upload in the media storage for the worker (a part at a time); returns its
    name there (relative to MEDIA_ROOT on local disk)."""
    relative = _staged_name(upload)
    if storage.is_remote(storage.MEDIA):
        storage.store_stream(storage.MEDIA, relative, upload)
    else:
        copy_upload(upload, Path(settings.MEDIA_ROOT) / relative, doing="keep the upload")
    return relative


def _staged_name(upload: Any) -> str:
    """A fresh name under STAGED_FOLDER with the upload's suffix (which says its format)."""
    suffix = PurePosixPath(str(getattr(upload, "name", "") or "")).suffix.lower()[:10]
    return f"{STAGED_FOLDER}/{uuid.uuid4().hex}{suffix}"


def embeddings_import_run(*, job_id: int) -> None:
    """A worker reads the staged upload into a model (or the job's message says why not),
    then removes the staged files."""
    claimed = EmbeddingImport.objects.filter(
        pk=job_id, status=EmbeddingImport.Status.QUEUED
    ).update(status=EmbeddingImport.Status.RUNNING)
    if not claimed:
        return  # a duplicated message, or an import already done
    job = EmbeddingImport.objects.select_related("dataset", "created_by").get(pk=job_id)
    fields: dict[str, Any] = {"finished_at": timezone.now()}
    try:
        # On this machine's disk: where it lies, or fetched from the object store.
        staged = storage.local_path(storage.MEDIA, job.staged_path)
        with staged.open("rb") as handle:
            ids = (
                storage.local_path(storage.MEDIA, job.ids_path).open("rb") if job.ids_path else None
            )
            try:
                model = embeddings_import(
                    name=job.name, dataset=job.dataset, file=File(handle, name=str(staged)),
                    ids_file=ids, match=job.match, provenance=job.provenance, link=job.link,
                    licence=job.licence, file_name=job.file_name, created_by=job.created_by,
                    progress=_job_progress(job_id),
                )  # fmt: skip
            finally:
                if ids is not None:
                    ids.close()
        fields.update(status=EmbeddingImport.Status.SUCCEEDED, model=model)
    except ValidationError as exc:
        fields.update(status=EmbeddingImport.Status.FAILED, error_message=" ".join(exc.messages))
    except StorageError as exc:
        fields.update(status=EmbeddingImport.Status.FAILED, error_message=str(exc))
    except Exception as exc:
        logger.exception("Import of embeddings %s failed", job_id)
        fields.update(
            status=EmbeddingImport.Status.FAILED,
            error_message=internal_error("importing embeddings", exc),
        )
    finally:
        uploads = [name for name in (job.staged_path, job.ids_path) if name]
        _remove_staged(uploads, f"embeddings import {job_id}")
    EmbeddingImport.objects.filter(pk=job_id).update(**fields)


def _remove_staged(names: list[str], of: str) -> None:
    """Remove staged uploads; one the store cannot remove now stays (and is logged): the
    outcome of the import stands either way."""
    try:
        for name in names:
            storage.delete(storage.MEDIA, name)
    except StorageError as exc:
        logger.warning("The upload of %s stays in the store: %s", of, exc)


def _job_progress(job_id: int) -> Callable[[int, int], None]:
    """Write progress at most twice a second (and the last block)."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_REPORT_SECONDS and done < total:
            return
        last = now
        EmbeddingImport.objects.filter(pk=job_id).update(processed=done, total=total)

    return report
