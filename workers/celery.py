"""The Celery application of Likeness.

Queues: ``gpu`` (embedding extraction, one worker per accelerator) and ``cpu`` (metrics).
Broker: ``CELERY_BROKER_URL`` (Redis in production and CI; an embedded filesystem broker by
default). Start a worker with ``celery -A workers worker -Q gpu,cpu``.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from workers import presence
from workers.recovery import StepRecovery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("likeness")
# The default in every thread (Celery makes a new app current only in the thread that built
# it): services send tasks by name through celery.current_app from web server threads too.
app.set_default()
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")

logger = logging.getLogger(__name__)


def _ensure_broker_folders() -> None:
    """The filesystem transport needs its folders to exist before the first message."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)


_ensure_broker_folders()

# Sweeps for lost messages and dropped steps when the consumer (re)connects, and periodically.
app.steps["consumer"].add(StepRecovery)


worker_ready.connect(presence.start, weak=False)
worker_shutting_down.connect(presence.ending, weak=False)
worker_shutdown.connect(presence.stop, weak=False)


@worker_ready.connect
def requeue_steps_of_previous_incarnation(sender: object, **_: object) -> None:
    """A worker that starts under a name still holding steps died before; resume them."""
    from evaluation.services import steps_requeue_orphaned

    hostname = getattr(sender, "hostname", "")
    count = steps_requeue_orphaned(worker=hostname)
    if count:
        logger.warning("Requeued %d run step(s) left behind by a previous %s", count, hostname)
