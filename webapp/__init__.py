"""Likeness Django project: settings, URLs, authentication and the dashboard shell.

Loading the Celery app here makes it the default in every thread of every Django process, so
services send tasks by name (``celery.current_app``) without importing the workers."""

from workers.celery import app as celery_app

__all__ = ["celery_app"]
