"""This machine's copies of files from the object store are pruned least recently used first,
never the files being written; `manage.py prune_storage_cache` says what it did."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluation import storage
from evaluation.management.commands.prune_storage_cache import size_in_bytes
from tests.object_store import (  # noqa: F401 (fixtures)
    moto_server_fixture,
    object_store_fixture,
)

pytestmark = pytest.mark.django_db
DAY = 86400


def copy(relative: str, size: int, used_days_ago: float) -> Path:
    path = storage.cache_root() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    used = time.time() - used_days_ago * DAY
    os.utime(path, (used, used))
    return path


@pytest.fixture
def cache(settings, tmp_path):
    settings.STORAGE_CACHE_DIR = tmp_path / "cache"
    return {
        "old": copy("embeddings/by-name/ab/old.npy", 400, used_days_ago=40),
        "mid": copy("media/by-hash/cd/mid.png", 300, used_days_ago=10),
        "new": copy("embeddings/by-name/ef/new.npy", 200, used_days_ago=1),
        "downloading": copy("media/by-hash/cd/.fetch-x.tmp", 500, used_days_ago=90),
        "work": copy("work/embeddings/ab/chunk.npy.partial-1/0.npy", 500, used_days_ago=90),
    }


def present(cache: dict[str, Path]) -> set[str]:
    return {name for name, path in cache.items() if path.exists()}


def test_pruning_to_a_size_removes_the_least_recently_used_copies_first(cache):
    pruned = storage.prune_cache(max_bytes=500)  # of 900 bytes of copies
    assert present(cache) == {"mid", "new", "downloading", "work"}
    assert (pruned.files, pruned.freed, pruned.kept) == (1, 400, 500)
    pruned = storage.prune_cache(max_bytes=499)
    assert present(cache) == {"new", "downloading", "work"}
    assert (pruned.files, pruned.freed, pruned.kept) == (1, 300, 200)


def test_a_copy_used_in_the_last_hour_is_never_pruned(cache):
    recent = copy("media/by-hash/aa/recent.png", 100, used_days_ago=10 / (24 * 60))
    storage.prune_cache(max_bytes=0)
    assert recent.exists() and present(cache) == {"downloading", "work"}


def test_using_a_copy_marks_it_used(cache):
    old = cache["old"]
    assert storage._touched(old)  # a cache hit, as local_path and fetch_many see one
    storage.prune_cache(unused_for=30 * DAY)
    assert old.exists()


def test_pruning_by_age_removes_copies_unused_for_that_long(cache):
    pruned = storage.prune_cache(unused_for=30 * DAY)
    assert present(cache) == {"mid", "new", "downloading", "work"}
    assert pruned.files == 1


def test_the_command_prunes_the_object_stores_cache(object_store, cache):
    out = io.StringIO()
    call_command("prune_storage_cache", "--max-size", "0.3k", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"files": 2, "freed_bytes": 700, "kept_bytes": 200}
    assert present(cache) == {"new", "downloading", "work"}


def test_the_command_on_local_disk_says_there_is_no_cache(cache):
    out = io.StringIO()
    call_command("prune_storage_cache", "--max-size", "0", stdout=out)
    assert "No object store is configured" in out.getvalue()
    assert present(cache) == set(cache)  # nothing touched


def test_the_command_needs_a_limit_and_a_real_size():
    with pytest.raises(CommandError, match="Give --max-size, --unused-days or both"):
        call_command("prune_storage_cache")
    assert size_in_bytes("50G") == 50 * 10**9 and size_in_bytes("1.5 MB") == 1_500_000
    with pytest.raises(CommandError, match="'lots' is not a size"):
        size_in_bytes("lots")
