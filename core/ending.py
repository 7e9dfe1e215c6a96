"""Whether this worker is ending: SLURM's time limit, preemption or ``scancel``, or
``docker stop``, sent SIGTERM, and Celery began its warm shutdown.

Work that can stop part-way (an extraction, after any batch) checks it and gives its step
back to the queue at once, so another worker resumes it from the saved chunks instead of
this one racing the SIGKILL that follows the grace period. The workers set it (Celery's
``worker_shutting_down`` signal, in the worker's main process); the apps only read it, so
it lives here.

The flag is a byte of shared memory made when this module is first imported, in the main
process before Celery forks its prefork pool, so the pool's children see the main process
set it (``docker stop`` signals only the main process). Under SLURM, which signals every
process of the job, a prefork child would die of the SIGTERM itself: the SLURM template
runs ``--pool solo``, where the task runs in the main process.
"""

from __future__ import annotations

import multiprocessing

# Raw: no lock, so setting it from a signal handler cannot deadlock.
_ending = multiprocessing.RawValue("b", 0)


def mark_ending() -> None:
    _ending.value = 1


def worker_ending() -> bool:
    return bool(_ending.value)
