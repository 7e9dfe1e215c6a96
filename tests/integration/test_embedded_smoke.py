"""Smoke test of the zero-setup default that `make run` uses: SQLite, the embedded
(filesystem) broker and a real worker started by `manage.py serve`, no Redis or PostgreSQL.
The same k-NN evaluation goes from the services to the leaderboard page over HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import REPO_ROOT, embedded_env, manage_in

SETUP = """
import io
from evaluation import services
from webapp.demo import digits_zip
from evaluation.metrics import knn_entry
from evaluation.imports.stimuli import dataset_import_images
dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=200)))
model = services.model_register(name="test-vit", source="timm", identifier="test_vit", weights="untrained")
services.run_create(dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")])
print("TARGET", dataset.targets.get().pk)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_embedded_defaults_run_knn_to_the_leaderboard(tmp_path):
    env = embedded_env(tmp_path / "var")

    def manage(*args: str) -> str:
        return manage_in(env, *args).stdout

    manage("migrate", "--noinput")
    target = re.search(r"TARGET (\d+)", manage("shell", "-c", SETUP)).group(1)
    assert (tmp_path / "var" / "likeness.sqlite3").exists()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        page = ""
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and "knn(k=5,split=loo)" not in page:
            time.sleep(1)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/leaderboards/{target}/", timeout=5
                ) as r:
                    page = r.read().decode()
            except OSError:
                continue
        log = tmp_path / "var" / "worker.log"
        assert "knn(k=5,split=loo)" in page, (
            log.read_text()[-4000:] if log.exists() else "no worker log"
        )
        assert "test-vit" in page and "untrained baseline" in page
        assert re.search(r"\[0\.\d{3}, [01]\.\d{3}\]", page), "the score is shown with its interval"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
