"""Whether this worker process is ending: SLURM's time limit, preemption or ``scancel`` (or
``docker stop``) sent SIGTERM, and Celery began its warm shutdown.

Work that can stop part-way (an extraction, after any batch) checks it and gives its step
back to the queue at once, so another worker resumes it from the saved chunks instead of
this one racing the SIGKILL that follows the grace period. The workers set it (Celery's
``worker_shutting_down`` signal, in the worker's main process); the apps only read it, so
it lives here. Tasks see it where they run in that process: ``--pool solo``, as the SLURM
template starts workers. In the prefork pool a task runs in a child the flag does not reach,
and the warm shutdown waits for it as before.
"""

from __future__ import annotations

import threading

_ending = threading.Event()


def mark_ending() -> None:
    _ending.set()


def worker_ending() -> bool:
    return _ending.is_set()
