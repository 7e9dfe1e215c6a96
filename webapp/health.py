"""Health probe for Docker health checks and load balancers: ``GET /healthz``.

Answered before host validation and every other middleware, so a probe needs neither an
allowed Host header nor a session. It says whether the database and the Celery broker
answer, as JSON::

    {"status": "ok", "database": "ok", "broker": "ok", "broker_transport": "redis"}

and answers 503 when either does not, naming which ("database": "unreachable
(OperationalError)"). The probe is public, so the body names only the exception's class; the
full error (hosts, ports) goes to the log.

Both checks are cheap: one ``SELECT 1`` on the request's own (persistent) connection, and a
broker connection opened with a one-second timeout and no retry, pinged (Redis answers a
PING on connect) and closed: about half a millisecond on loopback. The embedded filesystem
broker (the zero-setup default) has no server: its check is that its message folders are
writable directories, and the body says ``"broker_transport": "filesystem"``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from kombu import Connection

logger = logging.getLogger(__name__)

# Past this a probe calls the broker down rather than hold a server thread: a healthy broker
# on the same network answers in well under a millisecond.
BROKER_TIMEOUT_SECONDS = 1.0
FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out", "control_folder")


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != "/healthz":
            return self.get_response(request)
        return health_response()


def health_response() -> HttpResponse:
    database = database_state()
    broker, transport = broker_state()
    healthy = database == "ok" and broker == "ok"
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "broker": broker,
        "broker_transport": transport,
    }
    response = HttpResponse(
        json.dumps(body), status=200 if healthy else 503, content_type="application/json"
    )
    response["Cache-Control"] = "no-store"
    return response


def database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means the same thing to a probe
        logger.warning("Health probe: the database is unreachable: %s", exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def broker_state() -> tuple[str, str]:
    """("ok" or "unreachable (...)", the transport's name), from the settings the Celery app
    is configured from (CELERY_BROKER_URL and its transport options)."""
    options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
        "socket_timeout": BROKER_TIMEOUT_SECONDS,
    }
    broker = Connection(
        settings.CELERY_BROKER_URL,
        transport_options=options,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
    )
    transport = broker.transport_cls  # the URL's scheme: redis, filesystem, amqp, ...
    try:
        with broker:
            if transport == "filesystem":
                check_filesystem_folders(options)
            else:
                broker.ensure_connection(max_retries=0)  # one attempt: no sleep between tries
    except Exception as exc:  # kombu raises each transport's own errors
        logger.warning("Health probe: the %s broker is unreachable: %s", transport, exc)
        return f"unreachable ({type(exc).__name__})", transport
    return "ok", transport


def check_filesystem_folders(options: dict[str, object]) -> None:
    """The embedded broker is reachable when its message folders are writable directories."""
    for key in FILESYSTEM_FOLDERS:
        folder = str(options.get(key) or "")
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            raise NotADirectoryError(f"the filesystem broker's {key} {folder!r} is not writable")
