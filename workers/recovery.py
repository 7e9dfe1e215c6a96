"""Recovery that does not wait for the stall reaper (``RUN_STALL_SECONDS``, 15 minutes).

Each worker runs one sweeper thread. It sweeps when the worker's consumer (re)connects to
the broker (a broker restart is then over), every ``RUN_SWEEP_SECONDS`` after that, and once
more a grace period after a reconnect (messages sent just before it are then past their
grace). A sweep

- requeues the steps this worker's name holds while none of its tasks runs them (a task that
  lost the database mid-step could not record anything; the step waits for nothing now);
- sends again the task of each waiting step whose message is lost: never sent (a run created
  while the broker was down) or no longer in the broker (Redis restarted without
  persistence). Steps whose message is still queued, or held by a worker, are left alone;
- sends the inspection (layer listing) of each model registered while the broker was down.

A sweep that meets a database or broker still away logs it and tries again next time. The
thread does its database work on its own connection, never on the consumer's event loop.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from celery import Celery, bootsteps
from celery.worker import state
from django import db
from django.conf import settings
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from workers.broker import live_step_messages

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)

# An outage of the database or the broker: expected, said in one line, tried again later.
OUTAGE_ERRORS = (db.DatabaseError, db.InterfaceError, KombuError, RedisError, OSError)


class StepSweeper(threading.Thread):
    def __init__(self, app: Celery, hostname: str) -> None:
        super().__init__(name="likeness-step-sweeper", daemon=True)
        self.app, self.hostname = app, hostname
        self.interval = float(settings.RUN_SWEEP_SECONDS)
        self.grace = float(settings.RUN_MESSAGE_GRACE_SECONDS)
        self._wake, self._halt = threading.Event(), threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def halt(self) -> None:
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                woken = self._wake.wait(self.interval)
                self._wake.clear()
                if self._halt.is_set():
                    break
                self.sweep()
                if woken and not self._halt.wait(self.grace + 1):
                    self.sweep()
        finally:
            db.connections.close_all()  # this thread's connections

    def sweep(self) -> None:
        from evaluation import services

        # Drop a connection that broke (database restarted) or aged, as a request would.
        db.close_old_connections()
        try:
            services.steps_requeue_dropped(worker=self.hostname, running=running_step_ids())
            services.steps_resend_lost(live=live_step_messages(self.app))
            services.models_resend_inspections()
            services.imports_resend_lost()
        except OUTAGE_ERRORS as exc:
            logger.warning(
                "Run step recovery could not look (%s: %s); trying again in %.0f s",
                type(exc).__name__,
                str(exc).strip(),
                self.interval,
            )
            db.close_old_connections()
        except Exception:  # never let the thread die: recovery is its only job
            logger.exception("Run step recovery failed; trying again in %.0f s", self.interval)


def running_step_ids() -> set[int]:
    """Ids of the steps whose task this worker has received and not yet finished."""
    from evaluation.services import STEP_TASKS

    for _ in range(5):  # the consumer changes these while we copy them
        try:
            requests = [*state.requests.values(), *state.active_requests]
            break
        except RuntimeError:
            continue
    else:
        requests = []
    step_ids = set()
    for request in requests:
        if request.task_name in STEP_TASKS and request.args:
            step_ids.add(int(request.args[0]))
    return step_ids


_sweepers: dict[str, StepSweeper] = {}
_lock = threading.Lock()


class StepRecovery(bootsteps.StartStopStep):
    """Consumer step: ``start`` runs on the first connection and after every reconnection
    to the broker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Consumer) -> None:
        hostname = consumer.hostname
        with _lock:
            sweeper = _sweepers.get(hostname)
            if sweeper is None or not sweeper.is_alive():
                sweeper = _sweepers[hostname] = StepSweeper(consumer.app, hostname)
                sweeper.start()
        sweeper.wake()

    def shutdown(self, consumer: Consumer) -> None:
        with _lock:
            sweeper = _sweepers.pop(consumer.hostname, None)
        if sweeper is not None:
            sweeper.halt()
