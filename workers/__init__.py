"""Celery app and thin tasks: each takes ids and calls one service."""

from workers.celery import app as celery_app

__all__ = ["celery_app"]
