"""The pilot's acceptance: 30 simulated participants through the project's gunicorn (its
gunicorn.conf.py, several worker processes) on PostgreSQL, on a pair-rating study and on a
multi-arrangement study. The pilot finishes, nothing of it is in the study's real aggregate
or counts, and its report shows the planted speeders and catch failers excluded. And
``manage.py simulate_study`` stopped by Ctrl-C or SIGTERM midway ends its pilot as failed
with nothing of it left counted."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from annotation import selectors, services
from annotation.models import ParticipantStatus, Pilot, PilotStatus, Study
from annotation.services import pilots
from annotation.simulation import CATCH_FAILER, HONEST, SPEEDER
from tests.annotation.test_pilots import clustered_model, draft_study
from tests.conftest import REPO_ROOT
from tests.integration.conftest import database_url

# The server reads what the tests write: committed rows (transactional tests).
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

READY_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(str):
    """The server's address, and its log (what it said about a failed request)."""

    log: Path

    def errors(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(line for line in text.splitlines() if "Error" in line)[-3000:]


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, tmp_path_factory) -> Iterator[Server]:
    """The project's gunicorn (3 workers x 2 threads) on the test database, one for the
    module (a start costs about 8 s). The bots' pages need no files: its own folders."""
    folder = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    log = folder / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(folder / "media"),
        "EMBEDDINGS_ROOT": str(folder / "embeddings"),
        "LIKENESS_VAR_DIR": str(folder / "var"),
        "WEB_WORKERS": "3",
        "WEB_THREADS": "2",
        "STATIC_MANIFEST": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=REPO_ROOT, env=env, start_new_session=True,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        address = Server(f"http://127.0.0.1:{port}")
        address.log = log
        yield address
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # master and workers: its own group
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def check_pilot_report(
    pilot, server: Server, *, participants: int, speeders: int, catch_failers: int
) -> None:
    report = pilot.report
    assert pilot.status == PilotStatus.FINISHED, pilot.error
    assert report["counts_after"] == report["counts_before"] == {"assigned": 0, "answered": 0}
    sessions = report["sessions"]
    assert sessions["errors"] == [], f"{sessions['errors']}\nThe server said:\n{server.errors()}"
    assert sessions["started"] == participants and sessions["refused"] == [], sessions
    bots = report["bots"]
    planted = [b for b in bots if b["persona"] in (SPEEDER, CATCH_FAILER)]
    assert sorted(b["persona"] for b in planted) == sorted(
        [SPEEDER] * speeders + [CATCH_FAILER] * catch_failers
    )
    assert all(b["status"] == ParticipantStatus.EXCLUDED for b in planted), planted
    assert report["quality"]["planted"] == {
        "sessions": speeders + catch_failers,
        "excluded": speeders + catch_failers,
    }
    assert set(report["quality"]["rules"]["too fast"]["personas"]) <= {SPEEDER, HONEST}
    assert report["quality"]["rules"]["too fast"]["personas"][SPEEDER] == speeders
    honest = [b for b in bots if b["persona"] == HONEST]
    excluded = [b for b in honest if b["status"] == ParticipantStatus.EXCLUDED]
    assert len(excluded) <= len(honest) // 5, excluded  # honest bots are mostly kept
    assignment = report["assignment"]
    assert assignment["over_quota"] == 0 and assignment["holdings_left"] == 0
    assert assignment["duplicates"] == 0 and assignment["counters_mismatched"] == []
    curve = report["reliability"]["curve"]
    assert [p["participants"] for p in curve][-1] == report["reliability"]["kept"]
    assert curve[-1]["mean"] is not None and curve[-1]["mean"] > 0.5, curve
    needed = report["reliability"]["needed"]
    assert needed["participants"] and needed["recruit"] >= needed["participants"], needed
    coverage = report["reliability"]["coverage"]
    assert 0 < coverage["twice"] <= coverage["once"] <= coverage["total"], coverage
    assert "not people" in report["reliability"]["caveat"]


def check_real_study_untouched(study: Study) -> None:
    study.refresh_from_db()
    assert study.status == "draft"
    assert not study.items.exclude(assigned=0, answered=0).exists()
    assert list(selectors.study_participants(study)) == []
    assert selectors.study_reliability(study) is None
    with pytest.raises(ValidationError, match="No usable responses"):
        services.study_aggregate(study=study)


def test_thirty_bots_pilot_a_pair_rating_study_through_gunicorn(gunicorn):
    study = draft_study(
        "pairs", judgments_per_item=4, trials_per_session=10, catch_trials=2, min_response_ms=400
    )
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(
        study=study, model=model, participants=30, speeders=3, catch_failers=3,
        lapse_rate=0.01, seed=11,
    )  # fmt: skip
    pilot = pilots.pilot_run(pilot=pilot, base_url=gunicorn)

    check_pilot_report(pilot, gunicorn, participants=30, speeders=3, catch_failers=3)
    rules = pilot.report["quality"]["rules"]
    assert rules["catch trials"]["personas"][CATCH_FAILER] == 3
    # An honest bot is excluded only for a lapse (a random answer) on a catch trial.
    for bot in pilot.report["bots"]:
        if bot["persona"] == HONEST and bot["status"] == ParticipantStatus.EXCLUDED:
            assert bot["lapses"] >= 1 and all("catch" in f for f in bot["flags"]), bot
    check_real_study_untouched(study)


def test_thirty_bots_pilot_a_multi_arrangement_study_through_gunicorn(gunicorn):
    study = draft_study(
        "arrangement",
        judgments_per_item=25,
        trials_per_session=4,
        catch_trials=1,
        # Per item the trial shows: a second to drag and place an item is a realistic floor;
        # honest and inattentive bots take about 5 and 4 s an item (simulation.py), so the
        # rule fires on the speeders (a fraction of the floor) alone.
        min_response_ms=1000,
        arena_max_items=8,
        evidence_threshold=1.0,
    )
    model = clustered_model(study.dataset, dims=3)
    pilot = pilots.pilot_start(
        study=study, model=model, participants=30, speeders=3, catch_failers=3, seed=12
    )
    pilot = pilots.pilot_run(pilot=pilot, base_url=gunicorn)

    check_pilot_report(pilot, gunicorn, participants=30, speeders=3, catch_failers=3)
    assert pilot.report["quality"]["rules"]["catch trials"]["personas"][CATCH_FAILER] == 3
    assert all(b["catch_trials"] == 1 for b in pilot.report["bots"])
    # Sessions of 8 of the 12 stimuli overlap, so kept sessions arranged every pair.
    assert pilot.report["reliability"]["coverage"] == {
        "unit": "stimulus pairs", "total": 66, "once": 66, "twice": 66,
    }  # fmt: skip
    assert all(b["ended_on"] in ("evidence", "plan") for b in pilot.report["bots"])
    assert not study.participants.exclude(session_state="released").exists()
    check_real_study_untouched(study)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_simulate_study_stopped_midway_ends_its_pilot_and_takes_its_counts_out(
    gunicorn, worker_env, stop
):
    study = draft_study("pairs", judgments_per_item=4, trials_per_session=10, catch_trials=2)
    model = clustered_model(study.dataset)
    command = subprocess.Popen(
        [sys.executable, "manage.py", "simulate_study", str(study.pk), "--participants", "40",
         "--model", model.name.upper(), "--url", gunicorn, "--concurrency", "1", "--seed", "3"],
        cwd=REPO_ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert command.stderr is not None
        seen = []
        for line in command.stderr:  # progress: "N of 40 bots done"
            seen.append(line)
            if "bots done" in line:
                break
        else:
            raise AssertionError(f"no progress from simulate_study:\n{''.join(seen)}")
        command.send_signal(stop)
        # A bot's request in flight is waited for (up to its 60 s HTTP timeout) before the
        # pilot is ended: one clean CI run timed out at 90 s here (cause not found).
        _, rest = command.communicate(timeout=180)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    said = "".join(seen) + rest
    how, returncode = ("Ctrl-C", 130) if stop == signal.SIGINT else ("SIGTERM", 143)
    assert command.returncode == returncode, said
    pilot = Pilot.objects.get(study=study)
    assert pilot.status == PilotStatus.FAILED and f"interrupted by {how}" in pilot.error, said
    assert f"Interrupted: pilot {pilot.pk} is failed." in said
    assert "Traceback" not in said
    assert 1 <= pilot.report["bots_done"] < 40
    assert pilot.participants.count() < 40  # the bots still waiting never started
    assert not pilot.participants.filter(status=ParticipantStatus.CONSENTED).exists()
    assert not services.pilot_admits(pilot=pilot, study=study)
    check_real_study_untouched(study)
