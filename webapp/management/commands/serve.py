"""Run Likeness on one machine: a Celery worker (both queues, with beat) and the web server.

This is what ``make run`` starts on the embedded defaults. Production runs gunicorn and
workers as separate services (see docker/).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.checks import service_problems


class Command(BaseCommand):
    help = "Start a Celery worker and the development web server; Ctrl-C stops both."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--no-worker", action="store_true", help="Start only the web server.")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = service_problems()
        if problems:
            raise CommandError("\n".join(problems))
        worker = None if options["no_worker"] else self._start_worker()
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            self._announce(options["host"], options["port"])
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()

    def _start_worker(self) -> subprocess.Popen[bytes]:
        log_path = Path(settings.VAR_DIR) / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--queues",
            "gpu,cpu",
            "--concurrency",
            "1",
            "--beat",
            # A stable name: after a crash, the next start resumes the steps it held.
            "--hostname",
            "embedded@%h",
            "--loglevel",
            "info",
            "--logfile",
            str(log_path),
        ]
        self.stdout.write(f"Celery worker starting (log: {log_path})")
        return subprocess.Popen(command)

    def _announce(self, host: str, port: str) -> None:
        credentials = Path(settings.VAR_DIR) / "demo-credentials.txt"
        login = (
            f"\n  Log in as researcher / {credentials.read_text().strip()}"
            if credentials.exists()
            else ""
        )
        self.stdout.write(
            self.style.SUCCESS(f"\n  Likeness is running at http://{host}:{port}/{login}\n")
        )
