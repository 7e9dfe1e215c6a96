"""Where media and embedding files live, and the one home of reading and writing them.

Two storages (settings.STORAGES): ``default`` (MEDIA) holds the stimulus files
(``datasets/<id>/...``) and uploads handed to a worker (``tmp/...``); ``embeddings`` holds the
embedding files, named by the fingerprint of everything that made them
(``<fp[:2]>/<fp>.npy``). Each is either local disk, the default (MEDIA_ROOT, EMBEDDINGS_ROOT,
which machines share over a shared filesystem), or, with STORAGE_BUCKET set, an
S3-compatible object store that every machine reaches.

On local disk a file is used where it lies. From an object store a machine reads a file
through its local cache (STORAGE_CACHE_DIR): downloaded once, streamed to a temporary file
and renamed into place, under a content-addressed name (a stimulus by the hash of its bytes,
checked as it arrives; an embedding file by its fingerprint), so a cached copy is never
stale and the cache can be emptied at any time. Files are written on local disk first and
then stored whole (uploaded in parts, streamed from disk). Files served to users stream from
the store, by byte range where one is asked for.

A store that cannot be reached, a bucket that does not exist, or credentials it refuses fail
the work with a StorageError that says which (the machine's problem, never "a bug").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, TypeVar

import numpy as np
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.signals import setting_changed
from s3transfer.exceptions import RetriesExceededError as S3TransferRetriesExceededError

from core.outages import FileStoreUnreachable
from evaluation.engine.errors import StorageError
from evaluation.engine.storage import writing

logger = logging.getLogger(__name__)

MEDIA = "default"
EMBEDDINGS = "embeddings"
CACHE_FOLDERS = {MEDIA: "media", EMBEDDINGS: "embeddings"}  # in STORAGE_CACHE_DIR
# Also in STORAGE_CACHE_DIR, beside the copies: files being written on this machine before
# they are stored (an extraction's chunks and joined file, an import's upload). Unlike the
# copies they are no cache: emptying it under a running extraction or import breaks that.
WORK_FOLDER = "work"
# Files fetched or stored at once (each its own connection): many small stimuli need them.
PARALLEL_TRANSFERS = 8
HASH_BLOCK = 1 << 20
# A .npy header that np.save writes for a 2-D float array is 128 bytes; this covers any.
NPY_HEAD_BYTES = 4096
T = TypeVar("T")


class EmbeddingsFileSystemStorage(FileSystemStorage):
    """The local-disk embeddings storage: EMBEDDINGS_ROOT, read when first used (and again
    when a test overrides it), as FileSystemStorage reads MEDIA_ROOT."""

    @cached_property
    def base_location(self) -> str:
        location = self.__dict__.get("_location")  # the location option, if one was given
        return str(settings.EMBEDDINGS_ROOT if location is None else location)

    def _clear_cached_properties(self, setting: Any, **kwargs: Any) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "EMBEDDINGS_ROOT":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)


class StoreUnreachable(StorageError, FileStoreUnreachable):
    """The object store did not answer (refused, timed out, unknown host): an outage, which
    pages and the API answer with 503 and Retry-After (core/outages.py)."""


class MissingFile(StorageError):
    """The object store does not hold a file the database names (its bucket is there)."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def close(self) -> None: ...


# --- Which storage ------------------------------------------------------------------------------
def storage_of(alias: str) -> Storage:
    return storages[alias]


def is_remote(alias: str) -> bool:
    """Whether the files of ``alias`` live in an object store (else on this machine's disk)."""
    return not isinstance(storage_of(alias), FileSystemStorage)


def describe(alias: str) -> str:
    """Where the files of ``alias`` live, for messages: "EMBEDDINGS_ROOT (/srv/emb)"."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        root = "EMBEDDINGS_ROOT" if alias == EMBEDDINGS else "MEDIA_ROOT"
        return f"{root} ({storage.location})"
    bucket, endpoint = _bucket_and_endpoint(storage)
    return f"the object store's bucket {bucket!r} at {endpoint}"


def cache_root() -> Path:
    return Path(settings.STORAGE_CACHE_DIR)


def work_root() -> Path:
    """Where this machine writes files before they are stored in an object store: on the
    cache's disk (so the stored file's copy is kept by a rename), but apart from the copies,
    which may be removed at any time."""
    return cache_root() / WORK_FOLDER


def work_names_root(alias: str) -> Path:
    """The work folder of files written under their stored names (an extraction's joined
    file and chunks): ``name`` is written at ``work_names_root(alias) / name``."""
    return work_root() / CACHE_FOLDERS[alias]


def work_path(alias: str, name: str) -> Path:
    return work_names_root(alias) / _safe_relative(name)


def work_place() -> str:
    """The work folder, for messages."""
    return f"STORAGE_CACHE_DIR ({work_root()})"


def scratch_folder(alias: str) -> Path:
    """A folder on this machine's disk for files being written before they are stored:
    inside the storage's own folder on local disk (so storing is a rename), else in the
    work folder beside the cache (so the stored file's copy is kept by a rename)."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        return Path(storage.location) / "tmp"
    return work_root() / "tmp"


def scratch_place(alias: str) -> str:
    """The scratch folder's disk, for messages: "EMBEDDINGS_ROOT (/srv/emb)"."""
    return describe(alias) if not is_remote(alias) else work_place()


# --- Reading ------------------------------------------------------------------------------------
def exists(alias: str, name: str) -> bool:
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(name)).is_file()
    _check_bucket(storage, alias, f"look for {name}")
    with _remote(alias, f"look for {name}"):
        try:
            _client(storage).head_object(Bucket=_bucket(storage), Key=_key(storage, name))
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True


def size(alias: str, name: str) -> int:
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(name)).stat().st_size
    _check_bucket(storage, alias, f"read the size of {name}")
    with _remote(alias, f"read the size of {name}", missing=name):
        answer = _client(storage).head_object(Bucket=_bucket(storage), Key=_key(storage, name))
        return int(answer["ContentLength"])


def open_stream(alias: str, name: str, start: int = 0, stop: int | None = None) -> Readable:
    """The bytes ``start`` to ``stop`` (exclusive; None: the end) of a stored file, read as
    they arrive (one ranged GET from an object store); the caller closes it."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        handle = open(storage.path(name), "rb")  # the caller closes it
        handle.seek(start)
        return handle if stop is None else _Limited(handle, stop - start)
    if stop is not None and stop <= start:
        return io.BytesIO(b"")
    wanted = f"bytes={start}-{'' if stop is None else stop - 1}"
    _check_bucket(storage, alias, f"read {name}")
    with _remote(alias, f"read {name}", missing=name):
        answer = _client(storage).get_object(
            Bucket=storage.bucket_name,  # type: ignore[attr-defined]
            Key=_key(storage, name),
            **({"Range": wanted} if start or stop is not None else {}),
        )
    return _RemoteBody(answer["Body"], alias, name)


def read_bytes(alias: str, name: str, start: int, stop: int) -> bytes:
    stream = open_stream(alias, name, start, stop)
    try:
        return _read_all(stream)
    finally:
        stream.close()


def npy_shape(alias: str, name: str) -> tuple[int, ...]:
    """The array shape a stored .npy file declares, from its header alone (a range read)."""
    head = read_bytes(alias, name, 0, NPY_HEAD_BYTES)
    buffer = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read_header(buffer)
    except ValueError as exc:  # a header longer than the bytes read, or not a .npy at all
        raise StorageError(
            f"{name} in {describe(alias)} is not a readable .npy file: {exc}"
        ) from exc
    return tuple(int(n) for n in shape)


def local_path(alias: str, name: str, *, sha256: str = "") -> Path:
    """The stored file ``name`` as a file on this machine's disk: where it lies on local
    disk, else the cache's copy, fetched first if missing (``sha256``: the hash its bytes
    must have; it then names the copy, so equal files share one)."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(name))
    copy = cached_copy_path(alias, name, sha256=sha256)
    if not _touched(copy):
        _download(storage, alias, name, copy, sha256)
    return copy


def _touched(copy: Path) -> bool:
    """Whether the cache holds ``copy``; if so, it is marked used now (prune_cache goes by
    it: file systems mounted noatime or relatime do not record reads)."""
    try:
        os.utime(copy)
    except FileNotFoundError:
        return False
    return copy.is_file()


def cached_copy_path(alias: str, name: str, *, sha256: str = "") -> Path:
    """Where the cache keeps its copy of ``name`` (whether or not it is there yet)."""
    if sha256:
        suffix = PurePosixPath(name).suffix.lower()[:10]  # decoders may go by it
        return cache_root() / CACHE_FOLDERS[alias] / "by-hash" / sha256[:2] / f"{sha256}{suffix}"
    return cached_names_root(alias) / _safe_relative(name)


def cached_names_root(alias: str) -> Path:
    """The cache's folder of copies kept under their stored names (embedding files, named
    by their fingerprint): ``name`` is kept at ``cached_names_root(alias) / name``."""
    return cache_root() / CACHE_FOLDERS[alias] / "by-name"


def fetch_file(alias: str, name: str, target: Path) -> bool:
    """Copy the stored file ``name`` to ``target`` on this machine (streamed to a temporary
    file beside it, then renamed); False if the store does not hold it. Fetched without
    asking first: a file removed between the question and the fetch (another step finishing
    the same extraction) is then "not held" too, and a chunk costs one request, not two."""
    return _download(storage_of(alias), alias, name, target, "", absent_ok=True)


def fetch_many(alias: str, files: Sequence[tuple[str, str]]) -> int:
    """Make sure the cache holds every (name, sha256) of ``files``, fetching the missing
    ones several at a time; returns how many were fetched. Nothing to do on local disk."""
    if not is_remote(alias):
        return 0
    missing = {
        cached_copy_path(alias, name, sha256=sha): (name, sha)
        for name, sha in files
        if not _touched(cached_copy_path(alias, name, sha256=sha))
    }
    _in_parallel([partial(local_path, alias, n, sha256=h) for n, h in missing.values()])
    return len(missing)


# --- Writing ------------------------------------------------------------------------------------
def store_file(alias: str, name: str, source: Path, *, keep_copy: bool = True) -> None:
    """Store the finished file ``source`` (on this machine's disk) as ``name``. On local disk
    it is renamed into place (``source`` must be on the same disk: see scratch_folder); to an
    object store it is uploaded (in parts, streamed from disk) and then renamed into the
    cache as the stored file's copy, or removed (``keep_copy=False``)."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        target = Path(storage.path(name))
        with writing(target.parent, place=describe(alias), doing=f"store {name}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        return
    upload(alias, name, source)
    if keep_copy:
        copy = cached_copy_path(alias, name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, copy)
    else:
        source.unlink(missing_ok=True)


def upload(alias: str, name: str, source: Path) -> None:
    """Upload the local file ``source`` to the object store as ``name`` (in parts, streamed
    from disk), leaving ``source`` where it is."""
    storage = _object_store(alias)
    _check_bucket(storage, alias, f"store {name}")
    with _remote(alias, f"store {name}"):
        _client(storage).upload_file(
            str(source),
            storage.bucket_name,  # type: ignore[attr-defined]
            _key(storage, name),
            ExtraArgs={"ContentType": "application/octet-stream"},
            Config=storage.transfer_config,  # type: ignore[attr-defined]
        )


def store_many(alias: str, files: Iterable[tuple[str, Path]]) -> None:
    """Store each (name, finished local file) of ``files``, several at a time; the local
    files are moved (local disk) or uploaded and removed (object store)."""
    _in_parallel([partial(store_file, alias, n, p, keep_copy=False) for n, p in files])


def store_stream(alias: str, name: str, source: IO[bytes]) -> None:
    """Upload what ``source`` holds to the object store as ``name``, read a part at a time
    (never whole in memory); ``source`` is left rewound. (On local disk, callers copy the
    upload into place themselves: core.uploads.copy_upload.)"""
    storage = _object_store(alias)
    source.seek(0)
    _check_bucket(storage, alias, f"store {name}")
    with _remote(alias, f"store {name}"):
        _client(storage).upload_fileobj(
            source,
            storage.bucket_name,  # type: ignore[attr-defined]
            _key(storage, name),
            ExtraArgs={"ContentType": "application/octet-stream"},
            Config=storage.transfer_config,  # type: ignore[attr-defined]
        )
    source.seek(0)


def delete(alias: str, name: str) -> None:
    """Remove a stored file (and the cache's copy); a file already gone is no error."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        Path(storage.path(name)).unlink(missing_ok=True)
        return
    with _remote(alias, f"remove {name}"):
        _client(storage).delete_object(Bucket=_bucket(storage), Key=_key(storage, name))
    cached_copy_path(alias, name).unlink(missing_ok=True)


def delete_under(alias: str, prefix: str) -> int:
    """Remove every file in the object store whose name starts with ``prefix`` (its
    "folder"); returns how many."""
    storage = _object_store(alias)
    client, bucket = _client(storage), storage.bucket_name  # type: ignore[attr-defined]
    removed = 0
    with _remote(alias, f"remove the files under {prefix}"):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=_key(storage, prefix)
        )
        for page in pages:
            keys = [{"Key": entry["Key"]} for entry in page.get("Contents", ())]
            if keys:
                answer = client.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
                )
                _refuse_failed_deletes(alias, prefix, answer.get("Errors", ()))
                removed += len(keys)
    return removed


def _refuse_failed_deletes(alias: str, prefix: str, errors: Sequence[dict[str, str]]) -> None:
    """A batch delete answers 200 even when the store kept some of the files: each one it
    kept comes back in "Errors", with why."""
    if not errors:
        return
    kept = "; ".join(
        f"{error.get('Key')} ({error.get('Code')}: {error.get('Message') or 'no message'})"
        for error in errors[:5]
    )
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise StorageError(
        f"{_capital(describe(alias))} kept {len(errors)} of the files under {prefix} it was "
        f"asked to remove: {kept}{more}. Check that this machine's credentials may delete in "
        "the bucket, then retry."
    )


# --- The cache's size ---------------------------------------------------------------------------
# Copies used this recently are never pruned: an extraction fetches a chunk's stimuli, then
# reads them over the following minutes.
PRUNE_SPARES_SECONDS = 3600


@dataclass(frozen=True)
class Pruned:
    files: int
    freed: int  # bytes
    kept: int  # bytes left in the copies


def prune_cache(*, max_bytes: int | None = None, unused_for: float | None = None) -> Pruned:
    """Remove this machine's copies of stored files, least recently used first (by their
    last use, which the cache records), until they take at most ``max_bytes``, and every
    copy unused for ``unused_for`` seconds; never one used in the last
    ``PRUNE_SPARES_SECONDS``. Only copies: the work folder (files being written) and
    downloads in progress are left alone. A copy a reader has open stays readable (the
    file lives on until it is closed); the next one to need it fetches it again."""
    copies = []
    for folder in CACHE_FOLDERS.values():
        for path in (cache_root() / folder).rglob("*"):
            if not path.name.startswith(".fetch-") and (usage := _usage(path)) is not None:
                copies.append((*usage, path))
    copies.sort()  # least recently used first
    total = sum(size for _, size, _ in copies)
    cutoff = time.time() - unused_for if unused_for is not None else None
    in_use = time.time() - PRUNE_SPARES_SECONDS
    files = freed = 0
    for used, size, path in copies:
        too_big = max_bytes is not None and total - freed > max_bytes
        too_old = cutoff is not None and used < cutoff
        # Looked at again just before: a worker may have used it since the listing.
        if not (too_big or too_old) or (_usage(path) or (in_use, 0))[0] >= in_use:
            continue
        path.unlink(missing_ok=True)
        files, freed = files + 1, freed + size
    return Pruned(files=files, freed=freed, kept=total - freed)


def _usage(path: Path) -> tuple[float, int] | None:
    """When a cached copy was last used (read, fetched or looked up), and its size; None if
    it is not a file (any more: another prune may be at work)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (max(info.st_atime, info.st_mtime), info.st_size) if path.is_file() else None


# --- The object store ---------------------------------------------------------------------------
def _object_store(alias: str) -> Storage:
    """The storage of ``alias``, which must be an object store (a caller's mistake if not)."""
    storage = storage_of(alias)
    if isinstance(storage, FileSystemStorage):
        raise ValueError(f"{describe(alias)} is local disk, not an object store.")
    return storage


def _bucket_and_endpoint(storage: Storage) -> tuple[str, str]:
    return storage.bucket_name, getattr(storage, "endpoint_url", None) or "Amazon S3"  # type: ignore[attr-defined]


_clients: dict[tuple[int, int], Any] = {}
_clients_lock = threading.Lock()


def _client(storage: Storage) -> Any:
    """One boto3 client per storage and process, shared by its threads (clients are
    thread-safe): the storage's own is per thread, and making one costs ~0.1 s of CPU, which
    the short-lived threads fetching a batch of stimuli would pay every time."""
    key = (os.getpid(), id(storage))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = storage.connection.meta.client  # type: ignore[attr-defined]
        return _clients[key]


def _bucket(storage: Storage) -> str:
    return str(storage.bucket_name)  # type: ignore[attr-defined]


def _status(exc: Any) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _key(storage: Storage, name: str) -> str:
    from storages.utils import clean_name

    return str(storage._normalize_name(clean_name(name)))  # type: ignore[attr-defined]


_checked_buckets: set[tuple[str, str]] = set()


def _check_bucket(storage: Storage, alias: str, doing: str) -> None:
    """Ask once per process that the bucket is there and answers these credentials: a
    missing bucket then says so, instead of every file in it seeming missing. Asked outside
    the file's own request: the store answers a missing bucket with a bare 404 there, which
    would read as a missing file."""
    place = _bucket_and_endpoint(storage)
    if place in _checked_buckets:
        return
    with _remote(alias, doing):  # no file named: a 404 here is the bucket's
        _client(storage).head_bucket(Bucket=place[0])
    _checked_buckets.add(place)


def _download(
    storage: Storage, alias: str, name: str, copy: Path, sha256: str, *, absent_ok: bool = False
) -> bool:
    """Fetch ``name`` into the cache as ``copy``: streamed to a temporary file beside it,
    checked against ``sha256`` if given, then renamed (two fetching at once both end with a
    whole file). A file the store does not hold is an error, or (``absent_ok``) False."""
    place = f"STORAGE_CACHE_DIR ({cache_root()})"  # or a folder the caller chose in it
    with writing(copy.parent, place=place, doing=f"make a folder for the copy of {name}"):
        copy.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=copy.parent, prefix=".fetch-", suffix=".tmp")
    os.close(handle)
    partial = Path(temporary)
    with writing(copy, place=place, doing=f"keep a copy of {name}", partial=partial):
        _check_bucket(storage, alias, f"fetch {name}")
        with _remote(alias, f"fetch {name}", missing=name):
            try:
                _client(storage).download_file(
                    storage.bucket_name,  # type: ignore[attr-defined]
                    _key(storage, name),
                    temporary,
                    Config=storage.transfer_config,  # type: ignore[attr-defined]
                )
            except ClientError as exc:
                if absent_ok and _status(exc) == 404:  # the bucket is there: it was checked
                    partial.unlink(missing_ok=True)
                    return False
                raise
        if sha256 and (found := _sha256_of(partial)) != sha256:
            raise StorageError(
                f"The stored file {name} in {describe(alias)} does not hold the content it "
                f"was imported with (sha256 {found[:12]}..., expected {sha256[:12]}...): it was "
                "changed or replaced in the store. Import the dataset again."
            )
        os.replace(partial, copy)
    return True


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _remote(alias: str, doing: str, *, missing: str = "") -> Iterator[None]:
    """Around a request to the object store: turn what it (or the way to it) answers into
    a StorageError saying what is wrong and what to do. ``missing``: the file asked for, if
    its absence is an error."""
    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise _named(alias, doing, missing, _original(exc)) from exc


def _original(exc: BaseException) -> BaseException:
    """What the store (or the way to it) answered, under boto3's transfer wrappers: an upload
    raises S3UploadFailedError while handling the ClientError, a download whose retries ran
    out RetriesExceededError holding the last failure."""
    seen = exc
    for _ in range(5):  # the wrappers nest at most twice; never loop on a cycle
        if not isinstance(seen, Boto3Error | S3TransferRetriesExceededError):
            return seen
        inner = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
        if inner is None:
            return seen
        seen = inner
    return seen


def _named(alias: str, doing: str, missing: str, exc: BaseException) -> StorageError:
    """The StorageError for what the store answered (``exc``: unwrapped by _original)."""
    where = describe(alias)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = _status(exc)
        answer = f"{code or status}: {error.get('Message') or 'no message'}"
        bucket, endpoint = _bucket_and_endpoint(storage_of(alias))
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and not missing):
            return StorageError(
                f"There is no bucket {bucket!r} at {endpoint}: could not {doing}. Create it, "
                "or set STORAGE_BUCKET to a bucket that exists, then retry."
            )
        return _client_error(where, doing, code, status, answer, missing)
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"No credentials for {where}: could not {doing}. Give this machine "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a role), then retry."
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, timeouts, DNS
        return StoreUnreachable(
            f"{_capital(where)} cannot be reached from this machine ({exc}): could "
            f"not {doing}. Check STORAGE_ENDPOINT_URL and that the store is up and reachable "
            "from here, then retry."
        )
    # A transfer that failed for a reason boto3 gives only in words.
    return StorageError(
        f"{_capital(where)} did not complete a transfer ({type(exc).__name__}: {exc}): could "
        f"not {doing}. Check that the store is up and reachable from here, then retry."
    )


def _client_error(
    where: str, doing: str, code: str, status: int | None, answer: str, missing: str
) -> StorageError:
    if code in ("NoSuchKey", "404", "NotFound"):
        return MissingFile(
            f"The file {missing} is missing from {where}: could not {doing}. The database "
            "names a file the store does not hold (removed, or stored elsewhere); import or "
            "run it again."
        )
    if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StorageError(
            f"{_capital(where)} refused access ({answer}): could not {doing}. Check this "
            "machine's credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or its role) "
            "and that they may list, read, write and delete in the bucket, then retry."
        )
    return StorageError(
        f"{_capital(where)} answered {answer}; could not {doing}. Check the store and this "
        "machine's settings for it, then retry."
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


class _RemoteBody:
    """An object store's response body: read as it arrives; its errors named."""

    def __init__(self, body: Any, alias: str, name: str) -> None:
        self.body, self.alias, self.name = body, alias, name

    def read(self, size: int = -1, /) -> bytes:
        with _remote(self.alias, f"read {self.name}", missing=self.name):
            return bytes(self.body.read(None if size < 0 else size))

    def close(self) -> None:
        self.body.close()


class _Limited:
    """At most ``left`` bytes of a local file."""

    def __init__(self, handle: IO[bytes], left: int) -> None:
        self.handle, self.left = handle, left

    def read(self, size: int = -1, /) -> bytes:
        wanted = self.left if size < 0 else min(size, self.left)
        block = self.handle.read(wanted) if wanted else b""
        self.left -= len(block)
        return block

    def close(self) -> None:
        self.handle.close()


def _read_all(stream: Readable) -> bytes:
    parts = []
    while block := stream.read(HASH_BLOCK):
        parts.append(block)
    return b"".join(parts)


def _safe_relative(name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("", ".", "..") or part.startswith("/") for part in parts):
        raise StorageError(f"{name!r} is not a stored file's name.")
    return Path(*parts)


def _in_parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``jobs`` a few at a time; the first failure is raised once the others stop."""
    if len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(PARALLEL_TRANSFERS, thread_name_prefix="likeness-store") as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _settings_changed(setting: str, **_: Any) -> None:
    if setting == "STORAGES":  # a test pointed the storages elsewhere: new clients, new check
        _checked_buckets.clear()
        with _clients_lock:
            _clients.clear()


setting_changed.connect(_settings_changed)
