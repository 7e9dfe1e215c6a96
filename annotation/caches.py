"""The per-process caches of human studies, in one place.

Each process (and its threads) keeps its own; nothing here is shared between processes or
written back, so a cache lost with a restart, or cleared, costs only a read or a sweep. Each
is safe for its own reason:

- ``EXPIRY_SWEEPS``: when this process last returned a study's expired trials to the pool
  (annotation/services/trials.py). A missing or stale entry only makes a sweep run early or
  up to EXPIRY_SWEEP_SECONDS late; the claim sweeps anyway whenever no item seems left, so
  no participant is refused an item because of it, and every sweep is conditional UPDATEs.
- ``DISPLAYED_STIMULI``: stimuli never change once imported (a changed dataset is imported
  as a new one), so a stimulus read once stays right; bounded by DISPLAYED_STIMULI_MAX
  (cleared, then refilled from the studies running now). Read-only use: rendering trials.
  Readers do one ``dict.get`` per id, atomic, so another thread clearing it is harmless.
- ``dataset_modality``: a dataset's modality is fixed when it is imported; file stimuli need
  it on every trial. Bounded by the LRU cache.

- ``SESSION_ESTIMATES``: a multi-arrangement session's inverse-MDS estimate (tens of
  milliseconds each; the study page reads every session's), keyed by the participant and
  the ids of the responses it rests on. A stored arrangement never changes, so a key names
  one result, and a new answer makes a new key. Bounded by SESSION_ESTIMATES_MAX (cleared,
  then refilled). Readers do one ``dict.get``, atomic.

One memo stays beside its only user: ``sql._layout``, each model's column list and
converters, derived from the code (not from data), so fixed for the life of the process.
"""

from __future__ import annotations

import functools
from typing import Any

from evaluation.models import Dataset, Stimulus

EXPIRY_SWEEPS: dict[int, float] = {}  # study id -> time.monotonic() of this process's sweep

DISPLAYED_STIMULI: dict[int, Stimulus] = {}
DISPLAYED_STIMULI_MAX = 20_000

SESSION_ESTIMATES: dict[tuple[int, tuple[int, ...]], Any] = {}
SESSION_ESTIMATES_MAX = 5_000


@functools.lru_cache(maxsize=1024)
def dataset_modality(dataset_id: int) -> str:
    return Dataset.objects.values_list("modality", flat=True).get(pk=dataset_id)
