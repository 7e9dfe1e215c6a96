"""Start-up checks that configured services answer, with messages that say what to fix.

``python manage.py check_services`` runs them (``make run`` and the docker entry points do).
They are not Django system checks, which run before every command, even offline ones.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections
from django.db.utils import OperationalError
from kombu import Connection


def database_problem() -> str | None:
    database = settings.DATABASES["default"]
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except OperationalError as exc:
        where = database.get("HOST") or database.get("NAME")
        return (
            f"The database at {where!r} ({database['ENGINE'].rsplit('.', 1)[-1]}) is unreachable: "
            f"{str(exc).strip()}. Check DATABASE_URL, or start the database server."
        )
    finally:
        connections["default"].close()
    return None


def broker_problem() -> str | None:
    # A kombu connection from the settings the Celery app reads too: this module may not
    # import the workers (the layering in .importlinter).
    url = settings.CELERY_BROKER_URL
    try:
        with Connection(
            url, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
        ) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises many transport-specific errors
        return (
            f"The Celery broker at {url!r} is unreachable: {exc}. Check CELERY_BROKER_URL, "
            "or start Redis (redis-server)."
        )
    return None


def service_problems() -> list[str]:
    return [p for p in (database_problem(), broker_problem()) if p]
