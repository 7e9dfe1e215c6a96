"""Content fingerprints: the keys of the embedding cache.

Two extractions with the same fingerprint produce the same embeddings, so the second one
reuses the first's file. Everything that changes the numbers goes in: the model source and
weights, layer, pooling, preprocessing, numeric precision and the stimuli themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

FINGERPRINT_VERSION = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stimulus_hash(*, content: bytes) -> str:
    """Hash of one stimulus' content (file bytes, or UTF-8 text)."""
    return sha256_bytes(content)


def dataset_content_hash(stimulus_hashes: Iterable[str]) -> str:
    """Hash of a dataset's stimuli in their order (labels do not change embeddings)."""
    digest = hashlib.sha256()
    for item in stimulus_hashes:
        digest.update(item.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def embedding_fingerprint(
    *,
    model: dict[str, Any],
    weights_id: str,
    layer: str,
    pooling: str,
    preprocessing: dict[str, Any],
    precision: str,
    dataset_hash: str,
) -> str:
    payload = {
        "version": FINGERPRINT_VERSION,
        "model": model,
        "weights": weights_id,
        "layer": layer,
        "pooling": pooling,
        "preprocessing": preprocessing,
        "precision": precision,
        "dataset": dataset_hash,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(canonical.encode("utf-8"))
