"""A worker's presence: it registers itself when ready (name, queues, host, SLURM job),
says it is alive every ``WORKER_HEARTBEAT_SECONDS``, leaves after ``WORKER_IDLE_EXIT_SECONDS``
without a task (so a SLURM allocation goes back), and says when it stops.

A SIGTERM (SLURM's time limit, preemption, scancel) marks the process as ending
(``core.ending``): with ``--pool solo`` an extraction in progress hands its step back at its
next progress report, and the warm shutdown that follows has nothing left to wait for.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from celery.worker import state
from django import db
from django.conf import settings

from core.ending import mark_ending
from workers.recovery import OUTAGE_ERRORS

logger = logging.getLogger(__name__)


class Presence(threading.Thread):
    def __init__(self, hostname: str, queues: str) -> None:
        super().__init__(name="likeness-presence", daemon=True)
        self.hostname, self.queues = hostname, queues
        self.interval = float(settings.WORKER_HEARTBEAT_SECONDS)
        self.idle_exit = float(settings.WORKER_IDLE_EXIT_SECONDS)
        self._halt = threading.Event()
        self._last_busy = time.monotonic()
        self._tasks_done = -1

    def halt(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            registered = self._register()
            while not self._halt.wait(self.interval):
                try:
                    registered = registered or self._register()
                    self._call("worker_seen", name=self.hostname)
                    if self._idle_too_long():
                        logger.warning(
                            "No task for %.0f s (WORKER_IDLE_EXIT_SECONDS): this worker leaves",
                            self.idle_exit,
                        )
                        # Celery's warm shutdown. A task taken between the check and the
                        # signal is not lost: an extraction hands its step back at its
                        # first batch, anything else is finished first.
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                except Exception:  # never let the thread die: idle exit depends on it
                    logger.exception("Worker presence failed; trying again next beat")
        finally:
            db.connections.close_all()  # this thread's connections

    def _register(self) -> bool:
        """Say who this worker is; False (tried again next beat) while the database is away."""
        return self._call(
            "worker_register",
            name=self.hostname,
            queues=self.queues,
            host=socket.gethostname(),
            pid=os.getpid(),
            slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
            slurm_job_name=os.environ.get("SLURM_JOB_NAME", ""),
        )

    def _idle_too_long(self) -> bool:
        """Busy when a task runs or waits in this worker, or one ended since last time."""
        done = sum(dict(state.total_count).values())  # copied: the consumer adds keys
        if state.active_requests or state.requests or done != self._tasks_done:
            self._tasks_done, self._last_busy = done, time.monotonic()
            return False
        return bool(self.idle_exit) and time.monotonic() - self._last_busy >= self.idle_exit

    def _call(self, service: str, **kwargs: Any) -> bool:
        from evaluation import services

        db.close_old_connections()
        try:
            getattr(services, service)(**kwargs)
        except OUTAGE_ERRORS as exc:  # said, and tried again at the next beat
            logger.warning("Worker registry not written (%s: %s)", type(exc).__name__, exc)
            return False
        return True


_presence: Presence | None = None


def start(sender: Any, **_: Any) -> None:
    """On ``worker_ready``: register and start beating."""
    global _presence
    hostname = getattr(sender, "hostname", "") or "unknown"
    queues = ",".join(sorted(q.name for q in sender.app.amqp.queues.consume_from.values()))
    _presence = Presence(hostname, queues)
    _presence.start()


def ending(sig: str = "", **_: Any) -> None:
    """On ``worker_shutting_down`` (in the signal handler: set a flag, nothing more)."""
    mark_ending()


def stop(sender: Any, **_: Any) -> None:
    """On ``worker_shutdown``: the registry says this worker stopped."""
    from evaluation import services

    if _presence is not None:
        _presence.halt()
    hostname = getattr(sender, "hostname", "") or ""
    try:
        services.worker_stopped(name=hostname)
    except OUTAGE_ERRORS as exc:
        logger.warning("Could not record that %s stopped (%s)", hostname, exc)
    finally:
        db.connections.close_all()
