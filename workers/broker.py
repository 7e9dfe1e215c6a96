"""What the broker holds: the (task, step id) of every run-step message in it.

The lost-message sweep (``evaluation.services.steps_resend_lost``) sends a waiting step's
task again only when its message is in none of the queues and with no worker. Redis loses
its messages when it restarts without persistence; it is also the one broker whose contents
can be read without consuming them: each queue is a list (one per priority level) and each
message a worker has taken but not yet acknowledged sits in the ``unacked`` hash until it
does (with ``acks_late``, until the task ends). For other brokers the answer is None
("cannot tell"), and only steps whose message was never sent are sent again.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from celery import Celery
from kombu.serialization import loads

logger = logging.getLogger(__name__)


def live_step_messages(app: Celery) -> set[tuple[str, int]] | None:
    """The (task name, step id) of every step message queued or held by a worker; None
    where the broker's contents cannot be read. Raises the transport's error when the
    broker does not answer."""
    with app.connection_for_read() as connection:
        if connection.transport.driver_type != "redis":
            return None
        channel: Any = connection.default_channel
        queues = sorted(
            {route["queue"] for route in (app.conf.task_routes or {}).values()}
            | {app.conf.task_default_queue}
        )
        # kombu keeps one list per priority level: the queue's own name for the lowest.
        keys = [
            channel._q_for_pri(queue, level) for queue in queues for level in channel.priority_steps
        ]
        # One MULTI/EXEC: a message moving from a queue to the unacked hash while we read
        # is seen in one place or the other, not in neither.
        with channel.client.pipeline(transaction=True) as pipe:
            for key in dict.fromkeys(keys):
                pipe.lrange(key, 0, -1)
            pipe.hvals(channel.unacked_key)
            *queued, unacked = pipe.execute()
    payloads = [json.loads(raw) for items in queued for raw in items]
    payloads += [json.loads(raw)[0] for raw in unacked]
    return {message for payload in payloads if (message := _step_message(payload))}


def _step_message(payload: dict[str, Any]) -> tuple[str, int] | None:
    from evaluation.services import STEP_TASKS

    task = (payload.get("headers") or {}).get("task")
    if task not in STEP_TASKS:
        return None
    try:
        body = payload["body"]
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = loads(body, payload["content-type"], payload["content-encoding"])[0]
        return task, int(args[0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        # A message of ours that cannot be read is left alone, and said.
        logger.warning("Unreadable %s message in the broker (%s)", task, exc)
        return None
