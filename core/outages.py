"""Which errors mean a service Likeness depends on is away (an outage, not a bug): the
database, the task queue, the object store of media and embeddings; and what to tell the user: the API (api/errors.py) answers them with 503 and Retry-After.

An error raised while the database restarts or is unreachable is an OperationalError with
no SQLSTATE (connection refused, server closed the connection), a connection exception
(SQLSTATE class 08), or a server shutting down or starting up (57P01-57P03); a connection
Django already knows to be broken raises InterfaceError. Other OperationalErrors (a statement
timeout, a lock not available) are the database answering, and stay what they are.
"""

from __future__ import annotations

from typing import NamedTuple

from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as KombuOperationalError

RETRY_AFTER_SECONDS = 30
_SERVER_GOING_AWAY = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def database_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if type(cause).__module__.split(".")[0] != "psycopg":
        return False  # SQLite's OperationalErrors are about the file, not a server
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GOING_AWAY


def broker_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, KombuOperationalError)


class FileStoreUnreachable(Exception):
    """Marks an app's error that means the object store holding media and embeddings
    cannot be reached (evaluation.storage raises one); core knows no app's classes."""


DATABASE_UNREACHABLE = (
    "The database is unreachable (it may be restarting): this is an outage, not a problem "
    f"with your request. Try again in {RETRY_AFTER_SECONDS} seconds."
)
FILE_STORE_UNREACHABLE = (
    "The file store (object storage) is unreachable: this is an outage, not a problem with "
    f"your request. Try again in {RETRY_AFTER_SECONDS} seconds."
)
BROKER_UNREACHABLE = (
    "The task queue (Celery broker) is unreachable: this is an outage, not a problem with "
    f"your request. Try again in {RETRY_AFTER_SECONDS} seconds."
)


class Outage(NamedTuple):
    code: str  # the API's error code
    service: str  # for the log
    message: str  # for the user


def outage_of(exc: BaseException) -> Outage | None:
    """The outage ``exc`` reveals (API and web pages answer it with 503), or None."""
    if database_unreachable(exc):
        return Outage("database_unreachable", "Database", DATABASE_UNREACHABLE)
    if broker_unreachable(exc):
        return Outage("queue_unreachable", "Task queue", BROKER_UNREACHABLE)
    if isinstance(exc, FileStoreUnreachable):
        return Outage("storage_unreachable", "File store", FILE_STORE_UNREACHABLE)
    return None
