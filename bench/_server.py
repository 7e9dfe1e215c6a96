"""Helpers the load benchmarks share: a free loopback port, PostgreSQL admin statements, and
a gunicorn started in its own process group, waited for and stopped."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def wait_ready(port: int, path: str, server: subprocess.Popen, deadline: float) -> None:
    """Until ``path`` answers 200, gunicorn dies, or the deadline passes."""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up; see its log")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("gunicorn was not ready in time")


def start_gunicorn(
    workers: int, worker_class: str, threads: int, port: int, log, env: dict
) -> subprocess.Popen:
    """The project's gunicorn on a loopback port, in its own process group (stop_gunicorn)."""
    command = [
        sys.executable, "-m", "gunicorn", "webapp.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", worker_class,
        "--timeout", "60",
        "--backlog", "2048",
        "--log-level", "warning",
        "--error-logfile", str(log),
    ]  # fmt: skip
    # Sized through the environment, so that the project's gunicorn.conf.py (read from ROOT)
    # derives its per-worker connection limit from the same thread count.
    env = {**env, "WEB_WORKERS": str(workers), "WEB_THREADS": str(threads)}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop_gunicorn(server: subprocess.Popen | None) -> None:
    if server is None or server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # its own process group: master and workers
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def drop_database(name: str) -> None:
    """Close this process's connections, then drop a benchmark's database."""
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # Django not set up yet: nothing of ours is connected
        pass
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fresh_django(database: str, broker_url: str, root: Path) -> None:
    """A new, migrated PostgreSQL database and an empty Redis database for a benchmark that
    runs real workers, and Django set up on them in this process (the environment must
    already name them: DATABASE_URL, CELERY_BROKER_URL)."""
    import redis

    pg_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {database}")
    redis.Redis.from_url(broker_url).flushdb()
    sys.path.insert(0, str(root))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_watchdog(seconds: float, cleanup, label: str = "") -> threading.Timer:
    """Bound a whole benchmark: after ``seconds``, clean up and exit with status 3."""

    def overrun() -> None:
        print(f"{label}time bound of {seconds:.0f} s reached: stopping", flush=True)
        try:
            cleanup()
        finally:
            os._exit(3)

    watchdog = threading.Timer(seconds, overrun)
    watchdog.daemon = True
    watchdog.start()
    return watchdog
