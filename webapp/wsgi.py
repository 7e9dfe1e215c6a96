"""WSGI entry point (gunicorn webapp.wsgi)."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
application = get_wsgi_application()

# Import every view (and what views import) now, then move all these long-lived objects out
# of the garbage collector's reach. Otherwise the first requests import them, and each full
# collection walks them all: measured at up to 250 ms per collection under load, during which
# every thread of the worker waits (bench/study_load.py's p99).
_ = get_resolver().url_patterns
gc.collect()
gc.freeze()
