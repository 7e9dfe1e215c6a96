"""Pilots' guards, without a live server: only draft studies are piloted (a stale study
object included), a pilot can be stopped, only a finished pilot is aggregated, an aggregated
pilot is marked simulated and kept off automatic runs and the boards across targets, the
recruitment advice rests on the honest bots, a pilot's bot is nobody's account, and
multi-arrangement aggregation uses completed sessions only."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation import selectors, services, simulation
from annotation.models import Item, Participant, ParticipantStatus, Pilot, PilotStatus, Study
from annotation.services import pilot_report, pilots
from annotation.services.aggregation import aggregated_participants
from annotation.simulation import CATCH_FAILER, HONEST, SPEEDER
from evaluation.leaderboards import _overall, front_page
from evaluation.models import HumanJudgments, Target
from evaluation.services.rescoring import scores_rescore_stale
from evaluation.services.runs import run_create
from tests.annotation.test_pilots import clustered_model, draft_study
from tests.annotation.test_studies import answer_for, complete_session
from tests.factories import RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db


def stopped(pilot: Pilot) -> None:
    """End a pilot as its runner does when its bots are done (finished)."""
    pilot.refresh_from_db()
    assert pilots._end(pilot, report={**pilot.report}, error="")


# --- D1, D2: drafts only --------------------------------------------------------------------
def test_a_study_opened_since_it_was_read_is_not_piloted():
    study = draft_study()
    model = clustered_model(study.dataset)
    Study.objects.filter(pk=study.pk).update(status="open")  # someone opened it meanwhile
    assert study.status == "draft"  # the object in hand says draft
    with pytest.raises(ValidationError, match="open to participants"):
        pilots.pilot_start(study=study, model=model, participants=3)
    assert not Pilot.objects.exists()


def test_opening_waits_for_a_running_pilot():
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    with pytest.raises(ValidationError, match="A pilot of this study is running"):
        services.study_set_status(study=study, status="open")
    assert Study.objects.get(pk=study.pk).status == "draft"
    pilots.pilot_fail(pilot=pilot, error="test")
    services.study_set_status(study=study, status="open")
    assert Study.objects.get(pk=study.pk).status == "open"


def test_closed_and_archived_studies_are_not_piloted(researcher_client):
    study = draft_study()
    model = clustered_model(study.dataset)
    services.study_set_status(study=study, status="closed")
    with pytest.raises(ValidationError, match="is closed: a pilot comes before a study opens"):
        pilots.pilot_start(study=study, model=model, participants=3)
    with pytest.raises(CommandError, match="is closed: a pilot comes before"):
        call_command(
            "simulate_study", str(study.pk), "--participants", "3", "--model", model.name,
            "--url", "http://127.0.0.1:9", stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    url = reverse("annotation:study_pilots", args=[study.pk])
    page = researcher_client.get(url).content.decode()
    assert 'id="pilot-closed"' in page and 'id="pilot-form"' not in page
    assert "is closed" in page and "Pilots are for draft studies" in page
    assert "close the study to pilot it" not in page

    archived = draft_study()
    archived_model = clustered_model(archived.dataset)
    Study.objects.filter(pk=archived.pk).update(archived_at=timezone.now())
    archived.refresh_from_db()
    with pytest.raises(ValidationError, match="is archived"):
        pilots.pilot_start(study=archived, model=archived_model, participants=3)
    assert not Pilot.objects.exists()


def test_a_study_set_back_to_draft_after_real_participants_is_not_piloted(researcher_client):
    study = draft_study()
    model = clustered_model(study.dataset)
    services.study_set_status(study=study, status="open")
    real = services.participant_start(study=study, external_id="prolific-1")
    services.study_set_status(study=study, status="draft")  # any status may be posted
    assert Study.objects.get(pk=study.pk).status == "draft" and real.pilot_id is None
    with pytest.raises(ValidationError, match="has real participants"):
        pilots.pilot_start(study=study, model=model, participants=3)
    assert not Pilot.objects.exists()
    page = researcher_client.get(reverse("annotation:study_pilots", args=[study.pk]))
    assert 'id="pilot-closed"' in page.content.decode()
    assert 'id="pilot-form"' not in page.content.decode()


# --- D5: stopping a pilot -------------------------------------------------------------------
def test_a_researcher_stops_a_queued_pilot_and_its_counts_are_taken_out(
    researcher_client, researcher, outsider
):
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    bot = services.participant_start(study=study, pilot=pilot)
    assert Item.objects.filter(assigned=1).count() == 1
    panel = researcher_client.get(
        reverse("annotation:study_pilots", args=[study.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    stop = reverse("annotation:pilot_stop", args=[study.pk, pilot.pk])
    assert f'action="{stop}"' in panel and "Stop pilot" in panel and "Queued" in panel

    visitor = Client()
    visitor.force_login(outsider)
    assert visitor.post(stop).status_code == 403
    assert researcher_client.get(stop).status_code == 405
    assert Pilot.objects.get(pk=pilot.pk).status == PilotStatus.RUNNING

    response = researcher_client.post(stop, follow=True)
    assert f"Pilot {pilot.pk} stopped" in response.content.decode()
    pilot.refresh_from_db()
    assert pilot.status == PilotStatus.FAILED and pilot.error == f"Stopped by {researcher}."
    bot.refresh_from_db()
    assert bot.status == ParticipantStatus.WITHDRAWN
    assert not Item.objects.exclude(assigned=0).exists()
    assert pilot.report["taken_out"]["sessions_ended"] == 1
    # No new bot gets in once it is stopped, and stopping again says so.
    with pytest.raises(PermissionDenied, match="not open"):
        services.participant_start(study=study, pilot=pilot)
    again = researcher_client.post(stop, follow=True).content.decode()
    assert "had ended already" in again
    services.study_set_status(study=study, status="open")  # nothing holds it back now


def test_stop_asks_a_running_pilots_runner_which_ends_it_once_its_bots_stopped(
    researcher_client, researcher, monkeypatch
):
    """Stop while a live runner's bots answer: nothing is taken out beside them (a bot's
    request that loaded its participant before the Stop still claims its next item); the
    runner stops its bots at its next check and then ends the pilot with the Stop's words,
    taking out everything, that claim included."""
    study = draft_study(practice_trials=0, catch_trials=0)
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    stop = reverse("annotation:pilot_stop", args=[study.pk, pilot.pk])
    panel_url = reverse("annotation:study_pilots", args=[study.pk])
    seen: dict[str, object] = {}

    def bots_answering(*args: object, keep_going, **kwargs: object) -> list:
        assert keep_going()  # a live runner holds the pilot
        bot = services.participant_start(study=study, pilot=Pilot.objects.get(pk=pilot.pk))
        first = services.trial_current(participant=bot)
        assert first is not None
        services.response_submit(participant=bot, answer=answer_for(first))
        # The bot's next request has loaded its participant when the researcher stops.
        said = researcher_client.post(stop, follow=True).content.decode()
        seen["said"] = said
        asked = Pilot.objects.get(pk=pilot.pk)
        assert asked.status == PilotStatus.RUNNING and asked.error == f"Stopped by {researcher}."
        panel = researcher_client.get(panel_url, HTTP_HX_REQUEST="true").content.decode()
        assert "Stopping…" in panel and f'action="{stop}"' not in panel
        assert researcher_client.post(stop, follow=True).status_code == 200  # asked twice
        assert Pilot.objects.get(pk=pilot.pk).error == f"Stopped by {researcher}."
        # That request goes on: its next trial claims an item, counted while the bots run.
        assert services.trial_current(participant=bot, answered=first) is not None
        assert study.items.filter(assigned__gt=0).count() == 2
        # No new bot is admitted while the pilot stops.
        with pytest.raises(PermissionDenied):
            services.participant_start(study=study, pilot=Pilot.objects.get(pk=pilot.pk))
        assert not keep_going()  # the runner's next check: the bots stop
        seen["bot"] = bot.pk
        return []

    monkeypatch.setattr(simulation, "run_bots", bots_answering)
    pilot = pilots.pilot_run(pilot=pilot, base_url="http://testserver/")

    assert f"Pilot {pilot.pk} is stopping" in str(seen["said"])
    assert pilot.status == PilotStatus.FAILED and pilot.error == f"Stopped by {researcher}."
    assert Participant.objects.get(pk=seen["bot"]).status == ParticipantStatus.WITHDRAWN
    assert not study.items.exclude(assigned=0, answered=0).exists()  # the claim too
    assert pilot.report["taken_out"]["sessions_ended"] == 1 and "started_at" in pilot.report
    panel = researcher_client.get(panel_url, HTTP_HX_REQUEST="true").content.decode()
    assert "Stopping…" not in panel and f"Stopped by {researcher}." in panel
    services.study_set_status(study=study, status="open")


def test_stop_ends_a_pilot_whose_runner_went_silent_at_once(researcher_client, researcher):
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    assert pilots._claim(pilot)
    bot = services.participant_start(study=study, pilot=pilot)
    silent = (timezone.now() - pilots.STALE_SILENCE - timedelta(minutes=1)).isoformat()
    Pilot.objects.filter(pk=pilot.pk).update(report={**pilot.report, "alive_at": silent})
    stop = reverse("annotation:pilot_stop", args=[study.pk, pilot.pk])
    said = researcher_client.post(stop, follow=True).content.decode()
    assert f"Pilot {pilot.pk} stopped" in said
    pilot.refresh_from_db()
    assert pilot.status == PilotStatus.FAILED and pilot.error == f"Stopped by {researcher}."
    bot.refresh_from_db()
    assert bot.status == ParticipantStatus.WITHDRAWN
    assert not study.items.exclude(assigned=0, answered=0).exists()


def test_a_runner_whose_bots_finished_as_stop_was_pressed_ends_the_pilot_as_stopped():
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    assert pilots._claim(pilot)
    assert pilots.pilot_stop(pilot=pilot, by="someone") == pilots.STOPPING
    assert pilots._end(pilot, report={**pilot.report}, error="")  # the report was built
    assert pilot.status == PilotStatus.FAILED and pilot.error == "Stopped by someone."
    assert pilots.pilot_stop(pilot=pilot, by="someone") == ""


def test_a_pilot_object_read_before_it_ended_admits_no_bot():
    study = draft_study()
    model = clustered_model(study.dataset)
    pilots.pilot_start(study=study, model=model, participants=3)
    stale = Pilot.objects.get(study=study)  # read while it runs
    Pilot.objects.filter(pk=stale.pk).update(status=PilotStatus.FAILED)  # ended meanwhile
    assert services.pilot_admits(pilot=stale, study=study)  # the object in hand says running
    with pytest.raises(PermissionDenied, match="not open"):
        services.participant_start(study=study, pilot=stale)
    assert not Participant.objects.exists()
    assert not study.items.exclude(assigned=0).exists()


def _race(study: Study, call, meanwhile) -> BaseException | None:
    """Hold the study row's lock as pilot_start and study_set_status take it, start ``call``
    in another thread (its own connection) and wait until it waits on this transaction,
    then do ``meanwhile`` and commit: what ``call`` raised, once it has returned."""
    raised: list[BaseException | None] = [None]
    pid: list[int] = []

    def other() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid.append(cursor.fetchone()[0])
            call()
        except BaseException as exc:  # handed to the test
            raised[0] = exc
        finally:
            connection.close()

    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)
        thread = threading.Thread(target=other)
        thread.start()
        waiting = False
        for _ in range(200):  # up to 10 s
            with connection.cursor() as cursor:
                if pid:
                    cursor.execute("SELECT pg_backend_pid() = ANY(pg_blocking_pids(%s))", pid)
                    waiting = cursor.fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the other call never waited on the study row"
        meanwhile()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return raised[0]


@pytest.mark.django_db(transaction=True)
def test_opening_waits_on_the_study_row_for_a_pilot_starting_meanwhile():
    """The study row's lock in study_set_status is taken before it looks for running pilots:
    a pilot that starts while it waits is seen (without the lock, the study opens beside it)."""
    study = draft_study()
    model = clustered_model(study.dataset)
    raised = _race(
        study,
        lambda: services.study_set_status(study=Study.objects.get(pk=study.pk), status="open"),
        lambda: Pilot.objects.create(study=study, model=model, options={"participants": 3}),
    )
    assert isinstance(raised, ValidationError), raised
    assert "A pilot of this study is running" in str(raised)
    assert Study.objects.get(pk=study.pk).status == "draft"


@pytest.mark.django_db(transaction=True)
def test_a_pilot_starting_waits_on_the_study_row_for_an_opening_meanwhile():
    """pilot_start reads the study again under its row's lock: a study opened while it waits
    is refused (without the lock, a pilot starts on an open study)."""
    study = draft_study()
    model = clustered_model(study.dataset)
    raised = _race(
        study,
        lambda: pilots.pilot_start(study=study, model=model, participants=3),
        lambda: Study.objects.filter(pk=study.pk).update(status="open"),
    )
    assert isinstance(raised, ValidationError) and "open to participants" in str(raised), raised
    assert not Pilot.objects.exists()


# --- N1, D3: aggregating a pilot ------------------------------------------------------------
def finished_pilot(study: Study, bots: int = 2) -> Pilot:
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=bots)
    for _ in range(bots):
        complete_session(services.participant_start(study=study, pilot=pilot))
    return pilot


def test_only_a_finished_pilot_is_aggregated(researcher_client):
    study = draft_study(catch_trials=0, practice_trials=0)
    pilot = finished_pilot(study)
    aggregate = reverse("annotation:pilot_aggregate", args=[study.pk, pilot.pk])
    response = researcher_client.post(aggregate, follow=True).content.decode()
    assert "is running: only a finished pilot" in response
    assert not HumanJudgments.objects.filter(dataset=study.dataset).exists()
    pilot.refresh_from_db()
    pilots.pilot_fail(pilot=pilot, error="test")
    response = researcher_client.post(aggregate, follow=True).content.decode()
    assert "is failed: only a finished pilot" in response
    assert not HumanJudgments.objects.filter(dataset=study.dataset).exists()


def test_an_aggregated_pilot_is_simulated_scored_only_when_asked_and_not_ranked(
    researcher_client, client
):
    study = draft_study(catch_trials=0, practice_trials=0)
    pilot = finished_pilot(study)
    stopped(pilot)
    aggregate = reverse("annotation:pilot_aggregate", args=[study.pk, pilot.pk])
    assert "Stored pilot" in researcher_client.post(aggregate, follow=True).content.decode()
    judgments = HumanJudgments.objects.get(dataset=study.dataset)
    assert judgments.simulated
    simulated = Target.objects.get(judgments=judgments)
    assert simulated.simulated
    labels = Target.objects.get(dataset=study.dataset, kind="labels")
    assert not labels.simulated
    assert study.dataset.targets.count() == 2

    # A new run on the dataset does not score against it, unless it names it.
    model = pilot.model
    run = run_create(dataset=study.dataset, models=[model], metrics=[{"name": "knn"}])
    assert list(run.targets.all()) == [labels]
    with pytest.raises(ValidationError, match="needs"):
        run_create(dataset=study.dataset, models=[model], metrics=[{"name": "pair_alignment"}])
    chosen = run_create(
        dataset=study.dataset,
        models=[model],
        metrics=[{"name": "pair_alignment"}],
        targets=[simulated],
    )
    assert list(chosen.targets.all()) == [simulated]

    # Scored anyway (a run that named it): its board says simulated, and it is ranked
    # neither across targets nor on the front page.
    cache.clear()
    scored = RunFactory(dataset=study.dataset)
    ScoreFactory(
        run=scored,
        model=model,
        target=simulated,
        metric_key="pair_alignment",
        layer=model.default_layer,
    )
    ScoreFactory(run=scored, model=model, target=labels, metric_key="knn(k=5)")
    overall = _overall()
    ranked = {t.pk for group in overall.groups for t in group.targets}
    assert labels.pk in ranked and simulated.pk not in ranked
    front = front_page()
    assert simulated.pk not in {f.target.pk for f in front.human + front.labels}
    board = client.get(simulated.get_absolute_url()).content.decode()
    assert "simulated (pilot)" in board and 'id="target-simulated"' in board
    assert "simulated (pilot)" not in client.get(labels.get_absolute_url()).content.decode()
    index = client.get(reverse("evaluation:leaderboards")).content.decode()
    assert index.count("simulated (pilot)") == 1
    api = client.get(f"/api/targets/{simulated.pk}/").json()
    assert api["simulated"] is True
    assert client.get(f"/api/targets/{labels.pk}/").json()["simulated"] is False

    # Re-scoring its stale scores (these have no provenance) scores it, by naming it.
    rescoring = scores_rescore_stale(target=simulated)
    assert list(rescoring.run.targets.all()) == [simulated]


# --- D4: how many to recruit ----------------------------------------------------------------
def test_recruitment_rests_on_the_honest_bots_quality_control_kept():
    personas = [SPEEDER] * 3 + [CATCH_FAILER] * 3 + [HONEST] * 24
    bots = [
        {
            "persona": persona,
            "participant": number,
            "status": "completed" if persona == HONEST else "excluded",
        }
        for number, persona in enumerate(personas, start=1)
    ]
    needed = {"participants": 20}
    pilot_report.recruit_advice(needed, bots)
    assert needed["kept_share"] == 1.0 and needed["recruit"] == 20
    text = pilot_report.recruit_text(needed)
    assert text.startswith("Recruit about 20: quality control kept 100% of this pilot's honest")
    assert "planted ones are left out" in text
    # One honest bot in four excluded (a false positive): recruit a third more.
    for bot in bots[6:12]:
        bot["status"] = "excluded"
    needed = {"participants": 20}
    pilot_report.recruit_advice(needed, bots)
    assert needed["kept_share"] == 0.75 and needed["recruit"] == 27
    needed = {"participants": 20}
    pilot_report.recruit_advice(needed, [{**b, "status": "excluded"} for b in bots])
    assert "recruit" not in needed and pilot_report.recruit_text(needed) == ""


# --- N4: a pilot's bot is nobody's account --------------------------------------------------
def test_an_account_that_used_a_pilot_link_takes_part_as_itself_once_the_study_opens(
    researcher,
):
    study = draft_study(catch_trials=0, practice_trials=0)
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    bot = services.participant_start(study=study, user=researcher, pilot=pilot)
    assert bot.pilot_id == pilot.pk and bot.user_id is None
    # One made before bots were kept apart from accounts: the account's, and a bot.
    legacy = services.participant_start(study=study, pilot=pilot)
    Participant.objects.filter(pk=legacy.pk).update(user=researcher)
    assert services.participant_of_account(study=study, user=researcher) is None
    pilots.pilot_fail(pilot=pilot, error="test")
    services.study_set_status(study=study, status="open")
    real = services.participant_start(study=study, user=researcher)
    assert real.pilot_id is None and real.user_id == researcher.pk
    assert real.pk not in (bot.pk, legacy.pk)
    assert services.participant_of_account(study=study, user=researcher) == real
    assert services.participant_start(study=study, user=researcher) == real


def test_a_browser_that_followed_a_pilot_link_starts_afresh_once_the_pilot_ended():
    study = draft_study(catch_trials=0, practice_trials=0)
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    browser = Client()
    link = reverse("annotation:study_entry", args=[study.token])
    consented = browser.post(f"{link}?pilot={pilot.token}", {"consent": "on"})
    bot = Participant.objects.get(study=study)
    assert bot.pilot_id == pilot.pk and consented.url == bot.get_absolute_url()
    # While the pilot runs, the same browser goes back to its bot's session.
    assert browser.get(link).url == bot.get_absolute_url()
    pilots.pilot_fail(pilot=pilot, error="test")
    services.study_set_status(study=study, status="open")
    entry = browser.get(link)
    assert entry.status_code == 200 and 'name="consent"' in entry.content.decode()


# --- AGG: multi-arrangement aggregation uses completed sessions -----------------------------
def test_an_arrangement_session_in_progress_is_not_aggregated():
    from tests.annotation.test_arrangement_studies import (
        answer,
        make_study,
        placements_for,
        run_session,
        truth_for,
    )

    study = make_study(arena_max_items=5, judgments_per_item=3)
    points = truth_for(study)
    done = [services.participant_start(study=study) for _ in range(2)]
    for participant in done:
        run_session(participant, points)
        assert participant.status == ParticipantStatus.COMPLETED
    going = services.participant_start(study=study)
    trial = services.trial_current(participant=going)
    services.response_submit(
        participant=going, answer=answer(trial, placements_for(trial, points, 0.05))
    )
    going.refresh_from_db()
    assert going.status == ParticipantStatus.CONSENTED

    used = aggregated_participants(study)
    assert set(used.values_list("pk", flat=True)) == {p.pk for p in done}
    assert selectors.sessions_completed(study) == 2
    judgments = services.study_aggregate(study=study)
    assert judgments.participant_count == 2
    assert set(judgments.rows.values_list("participant", flat=True).distinct()) == {
        f"p{p.pk}" for p in done
    }


def test_arrangement_items_one_session_over_quota_are_topped_up_not_over_quota():
    """The last stimuli with room are arranged with full ones, one session over their quota
    (arrangements._claim_least_arranged): the report counts those apart; more is over."""
    study = draft_study("arrangement", judgments_per_item=2)
    pilot = pilots.pilot_start(study=study, model=clustered_model(study.dataset), participants=3)
    first, second, *_ = study.items.order_by("pk")
    Item.objects.filter(pk=first.pk).update(answered=3, assigned=3)
    Item.objects.filter(pk=second.pk).update(answered=4, assigned=4)
    assignment = pilot_report._assignment(pilot, [])
    assert assignment["topped_up"] == 1
    assert assignment["over_quota"] == 1 and assignment["over_quota_items"] == [second.pk]
