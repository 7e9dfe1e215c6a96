"""Two steps that need the same embeddings never extract them at once: the second waits
(keeping its heartbeat), then reuses what the first stored. PostgreSQL advisory locks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from evaluation import services
from evaluation.engine.extraction import ExtractionCancelled
from evaluation.metrics import knn_entry
from evaluation.models import EmbeddingSet, RunStep
from evaluation.services import embeddings
from tests.conftest import make_text_dataset, make_text_model

pytestmark = pytest.mark.django_db(transaction=True)

FINGERPRINT = "ab" * 32


def other_session() -> psycopg.Connection:
    """A second database session, as another worker's."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


@pytest.fixture
def claimed_step(enqueued):
    run = services.run_create(
        dataset=make_text_dataset(),
        models=[make_text_model()],
        metrics=[knn_entry(k=1, split="loo")],
    )
    step = run.steps.get()
    RunStep.objects.filter(pk=step.pk).update(status="extracting", claimed_by="w2")
    return RunStep.objects.select_related("run").get(pk=step.pk)


def extracting_elsewhere(step: RunStep) -> RunStep:
    """The lock holder's step: the same model on the same dataset, in another run, alive."""
    other = services.run_create(
        dataset=step.run.dataset, models=[step.model], metrics=[knn_entry(k=1, split="loo")]
    ).steps.get()
    RunStep.objects.filter(pk=other.pk).update(
        status="extracting", claimed_by="w1", heartbeat_at=timezone.now()
    )
    return other


def test_a_step_waits_while_another_holds_the_embeddings_and_keeps_its_heartbeat(
    claimed_step, monkeypatch
):
    monkeypatch.setattr(embeddings, "LOCK_POLL_SECONDS", 0.05)
    extracting_elsewhere(claimed_step)
    holder = other_session()
    key = embeddings._lock_key(FINGERPRINT)
    holder.execute("SELECT pg_advisory_lock(%s)", [key])
    threading.Timer(0.6, holder.close).start()  # the other worker finishes (or dies)
    before = RunStep.objects.get(pk=claimed_step.pk).heartbeat_at

    started = time.monotonic()
    with embeddings._one_extraction_at_a_time([FINGERPRINT], claimed_step, "w2"):
        waited = time.monotonic() - started
        with other_session() as probe:  # now held by this session
            assert not probe.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
    assert waited >= 0.5
    assert RunStep.objects.get(pk=claimed_step.pk).heartbeat_at != before
    with other_session() as probe:  # released on the way out
        assert probe.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]


def test_a_lock_whose_holder_has_no_live_step_is_not_waited_for(claimed_step, caplog):
    """A hung worker, or one whose host vanished while the database keeps its session: its
    step went silent (and the stall reaper takes it back), so nobody would ever release."""
    holder_step = extracting_elsewhere(claimed_step)
    RunStep.objects.filter(pk=holder_step.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_STALL_SECONDS + 1)
    )
    with other_session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [embeddings._lock_key(FINGERPRINT)])
        started = time.monotonic()
        with embeddings._one_extraction_at_a_time([FINGERPRINT], claimed_step, "w2"):
            assert time.monotonic() - started < 1
    assert "no live step extracts this model on this dataset" in caplog.text


def test_a_cancelled_run_stops_the_wait(claimed_step, monkeypatch):
    monkeypatch.setattr(embeddings, "LOCK_POLL_SECONDS", 0.05)
    extracting_elsewhere(claimed_step)
    with other_session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [embeddings._lock_key(FINGERPRINT)])
        services.run_cancel(run=claimed_step.run)
        with (
            pytest.raises(ExtractionCancelled),
            embeddings._one_extraction_at_a_time([FINGERPRINT], claimed_step, "w2"),
        ):
            pass


def test_two_runs_of_one_model_at_once_extract_once_and_both_succeed(enqueued):
    dataset, model = make_text_dataset(), make_text_model()
    runs = [
        services.run_create(dataset=dataset, models=[model], metrics=[knn_entry(k=1, split="loo")])
        for _ in range(2)
    ]
    steps = [run.steps.get() for run in runs]
    extractions = []
    real_extract = embeddings._extract

    def counted(*args, **kwargs):
        extractions.append(args[0].pk)
        time.sleep(0.5)  # long enough for the other step to arrive while this one works
        return real_extract(*args, **kwargs)

    embeddings._extract = counted
    try:

        def work(step, worker):
            try:
                services.step_extract(step_id=step.pk, worker=worker)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=work, args=(s, f"w{i}")) for i, s in enumerate(steps)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        embeddings._extract = real_extract
    finished = [RunStep.objects.get(pk=step.pk) for step in steps]
    assert [step.status for step in finished] == ["extracted", "extracted"]
    assert len(extractions) == 1  # the second waited, then found the first one's embeddings
    assert sorted(step.reused_embeddings for step in finished) == [False, True]
    assert EmbeddingSet.objects.count() == 1
