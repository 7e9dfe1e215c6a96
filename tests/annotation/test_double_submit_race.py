"""Exactly once under a real race: two copies of one answer on two connections at once."""

from __future__ import annotations

import threading

import pytest

from annotation import services
from annotation.models import Item, Response
from annotation.services import Answer, TrialProblem
from tests.annotation.test_studies import make_study


@pytest.mark.django_db(transaction=True)
def test_a_double_click_racing_on_two_connections_stores_one_response_and_one_next_trial():
    """Two requests with the same key at once (a double click, a retried request), on real
    threads and PostgreSQL transactions: no error, one response, the same next trial."""
    from django.db import connection

    study = make_study(judgments_per_item=5, trials_per_session=12)
    participant = services.participant_start(study=study)
    for _ in range(10):
        trial = services.trial_current(participant=participant)
        answer = Answer(trial_id=trial.pk, idempotency_key=f"k{trial.pk}", value=4)
        barrier = threading.Barrier(2)
        outcomes: list = []

        def submit(answer=answer, barrier=barrier, outcomes=outcomes) -> None:
            """What the participant page does with a POST."""
            try:
                barrier.wait()
                try:
                    services.response_submit(participant=participant, answer=answer)
                except TrialProblem as exc:
                    outcomes.append(exc)  # shown to the participant as an error
                outcomes.append(services.trial_current(participant=participant).pk)
            except Exception as exc:
                outcomes.append(exc)  # a 500
            finally:
                connection.close()

        threads = [threading.Thread(target=submit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(outcomes) == 2 and outcomes[0] == outcomes[1] != trial.pk, outcomes
    assert Response.objects.count() == 10
    assert sum(Item.objects.values_list("assigned", flat=True)) == 11  # 10 answered + 1 open
