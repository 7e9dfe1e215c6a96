"""Multi-arrangement studies through the services and the participant page: sessions claim
their stimuli within quota, later trials lift the weakest pairs, arrangements are checked
before anything is stored, quality rules, lapsed sessions, aggregation and exports."""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from annotation import exports, services
from annotation.models import Item, Participant, Response, Study, Trial, TrialRole
from annotation.services import Answer, ItemPlan, Placement, TrialProblem
from evaluation.engine.arrangement import next_subset, pair_evidence, simulate_arrangement
from evaluation.models import Judgment
from tests.conftest import SENTENCES, make_text_dataset

pytestmark = pytest.mark.django_db
keys = (f"key-{n}" for n in itertools.count())


def make_study(**design) -> Study:
    design.setdefault("judgments_per_item", 2)
    design.setdefault("trials_per_session", 6)
    design.setdefault("arena_max_items", 8)
    design.setdefault("evidence_threshold", 2.0)
    name = f"arrangement study {next(keys)}"
    study = services.study_create(
        dataset=make_text_dataset(name=f"sentences for {name}"),
        name=name,
        kind="arrangement",
        items=ItemPlan(),
        **design,
    )
    services.study_set_status(study=study, status="open")
    return study


def truth_for(study: Study) -> dict[int, np.ndarray]:
    """A known dissimilarity structure: stimuli as random points in 3-D, seeded by their
    order in the dataset (the same in every run, whatever ids the database gives)."""
    return {
        pk: np.random.default_rng(order).normal(size=3)
        for pk, order in study.dataset.stimuli.values_list("pk", "order")
    }


def placements_for(trial: Trial, points: dict[int, np.ndarray], noise: float, seed: int = 0):
    """Where a participant who knows ``points`` puts the trial's items: MDS plus noise, scaled
    into the arena (copies of one stimulus land together); every third item was moved
    again after it was dropped in, the others dropped once."""
    shown = list(trial.shown)
    truth = np.array(
        [[np.linalg.norm(points[a] - points[b]) for b in shown] for a in shown], dtype=float
    )
    xy = simulate_arrangement(truth, list(range(len(shown))), noise, np.random.default_rng(seed))
    xy -= xy.mean(axis=0)
    xy *= 0.9 / max(np.linalg.norm(xy, axis=1).max(), 1e-9)
    return tuple(
        Placement(s, float(x), float(y), 1 + (k % 3 == 0))
        for k, (s, (x, y)) in enumerate(zip(shown, xy, strict=True))
    )


def answer(trial: Trial, placements, rt_ms: int = 30_000) -> Answer:
    return Answer(trial_id=trial.pk, idempotency_key=next(keys), rt_ms=rt_ms, placements=placements)


def run_session(participant: Participant, points, noise: float = 0.05) -> list[Trial]:
    trials = []
    while (trial := services.trial_current(participant=participant)) is not None:
        trials.append(trial)
        services.response_submit(
            participant=participant,
            answer=answer(trial, placements_for(trial, points, noise, seed=len(trials))),
        )
    participant.refresh_from_db()
    return trials


def counts(study: Study) -> dict[int, tuple[int, int]]:
    return {
        a: (assigned, done)
        for a, assigned, done in study.items.values_list("a_id", "assigned", "answered")
    }


def test_sessions_claim_their_stimuli_within_quota_and_count_once_complete():
    study = make_study(judgments_per_item=1, arena_max_items=5)
    assert study.items.count() == len(SENTENCES)
    first = services.participant_start(study=study)
    assert len(first.session_stimuli) == 5 and first.session_state == "held"
    held = counts(study)
    assert sorted(held[s] for s in first.session_stimuli) == [(1, 0)] * 5
    second = services.participant_start(study=study)  # the stimuli nobody arranges yet
    assert not set(first.session_stimuli) & set(second.session_stimuli)
    run_session(first, truth_for(study))
    assert first.status == "completed" and first.session_state == "counted"
    assert all(counts(study)[s] == (1, 1) for s in first.session_stimuli)
    with pytest.raises(services.StudyFull):  # 8 stimuli, quota 1: sessions of 5 and 3 hold all
        services.participant_start(study=study)


def test_a_dataset_of_two_stimuli_makes_no_multi_arrangement_study():
    dataset = make_text_dataset(name="two sentences", rows=SENTENCES[:2])
    with pytest.raises(ValidationError, match="at least 3 stimuli; this one has 2"):
        services.study_create(dataset=dataset, name="too few", kind="arrangement", items=ItemPlan())
    assert not Study.objects.filter(name="too few").exists()


def test_the_last_stimuli_with_room_are_arranged_with_full_ones_and_the_study_completes():
    """8 stimuli, quota 1, sessions of up to 6: the second session finds only 2 stimuli with
    room, too few to arrange alone; the least arranged full one joins them, so the study
    gets every stimulus its session and closes itself."""
    study = make_study(judgments_per_item=1, arena_max_items=6)
    services.study_set_status(study=study, status="open")
    first = services.participant_start(study=study)
    run_session(first, truth_for(study))
    second = services.participant_start(study=study)
    left = set(study.items.values_list("a_id", flat=True)) - set(first.session_stimuli)
    assert len(left) == 2 and left < set(second.session_stimuli)
    assert len(second.session_stimuli) == 3
    run_session(second, truth_for(study))
    assert all(done >= 1 for _, done in counts(study).values())
    assert sorted(done for _, done in counts(study).values()) == [1] * 7 + [2]
    study.refresh_from_db()
    assert study.status == "closed" and study.completed_at is not None


def test_the_first_trial_shows_every_stimulus_and_later_ones_lift_the_weakest_pairs():
    study = make_study(arena_max_items=8, evidence_threshold=50.0, trials_per_session=4)
    participant = services.participant_start(study=study)
    points = truth_for(study)
    first = services.trial_current(participant=participant)
    assert sorted(first.shown) == sorted(participant.session_stimuli)
    placed = placements_for(first, points, 0.1)
    services.response_submit(participant=participant, answer=answer(first, placed))
    second = services.trial_current(participant=participant)
    # The subset a straightforward reading of the rule gives, from the first arrangement.
    index = {s: i for i, s in enumerate(participant.session_stimuli)}
    evidence = pair_evidence(8, [([index[s] for s in first.shown], [(p.x, p.y) for p in placed])])
    expected = next_subset(evidence, max_items=4, threshold=50.0)
    assert sorted(index[s] for s in second.shown) == expected
    trials = [first, *run_session(participant, points)]  # the second is still open
    assert len(trials) == 4  # the threshold is out of reach: the plan's trials end it


def evenly_spaced(trial: Trial) -> tuple[Placement, ...]:
    """The trial's items evenly on a ring: every pair well apart."""
    n = len(trial.shown)
    return tuple(
        Placement(s, 0.6 * math.cos(2 * math.pi * k / n), 0.6 * math.sin(2 * math.pi * k / n), 1)
        for k, s in enumerate(trial.shown)
    )


def evenly_spaced_six() -> tuple[Placement, ...]:
    trial = Trial(shown=list(range(6)))
    return evenly_spaced(trial)


def test_a_session_ends_once_every_pair_has_enough_evidence():
    """Six items evenly on a ring of radius 0.6: neighbours lie 2 * 0.6 * sin(30°) = 0.6
    arena radii = 0.3 arena diameters apart, evidence 0.3² = 0.09 (the other pairs lie
    farther apart and get more), so a threshold of 0.08 is met by the first trial and 0.1 is
    not (the plan's second trial then ends the session)."""
    neighbours = pair_evidence(6, [(range(6), [(p.x, p.y) for p in evenly_spaced_six()])])
    assert neighbours[0, 1] == pytest.approx(0.09) and neighbours.max() > 0.09
    assert np.min(neighbours + np.eye(6)) == pytest.approx(0.09)
    for threshold, trials in ((0.08, 1), (0.1, 2)):
        study = make_study(arena_max_items=6, evidence_threshold=threshold, trials_per_session=2)
        participant = services.participant_start(study=study)
        answered = 0
        while (trial := services.trial_current(participant=participant)) is not None:
            services.response_submit(
                participant=participant, answer=answer(trial, evenly_spaced(trial))
            )
            answered += 1
        participant.refresh_from_db()
        assert (answered, participant.status) == (trials, "completed"), threshold


def test_estimates_recover_the_arranged_structure_and_aggregate_as_dissimilarities():
    study = make_study(arena_max_items=10, evidence_threshold=3.0, trials_per_session=8)
    points = truth_for(study)
    for _ in range(2):
        run_session(services.participant_start(study=study), points, noise=0.05)
    participant = study.participants.first()
    estimate = services.session_estimate(participant)
    truth = [
        np.linalg.norm(points[a] - points[b])
        for a, b in itertools.combinations(estimate.stimuli, 2)
    ]
    upper = estimate.dissimilarities[np.triu_indices(len(estimate.stimuli), 1)]
    assert np.corrcoef(truth, upper)[0, 1] > 0.95
    judgments = services.study_aggregate(study=study)
    assert judgments.kind == "pairs" and judgments.value_meaning == "dissimilarity"
    pairs = math.comb(len(estimate.stimuli), 2)
    assert judgments.judgment_count == 2 * pairs and judgments.participant_count == 2
    assert judgments.reliability is not None
    rows = Judgment.objects.filter(judgments=judgments)
    assert all(math.isfinite(v) and v >= 0 for v in rows.values_list("value", flat=True))


def bad_placements(trial: Trial, other: Trial):
    inside = [
        Placement(s, 0.5 * math.cos(k), 0.5 * math.sin(k), 1) for k, s in enumerate(trial.shown)
    ]
    outside = [*inside[:-1], Placement(trial.shown[-1], 0.9, 0.9, 1)]
    nan = [*inside[:-1], Placement(trial.shown[-1], math.nan, 0.0, 1)]
    infinite = [*inside[:-1], Placement(trial.shown[-1], 0.0, math.inf, 1)]
    foreign = [Placement(s, 0.1 * k, 0.0, 1) for k, s in enumerate(other.shown)]
    stacked = [Placement(s, 0.2, 0.2, 1) for s in trial.shown]
    return {
        "outside the circle": outside,
        "no valid position": nan,
        "no valid position ": infinite,
        "positions came for": inside[:-1],
        "not for the items": foreign if len(foreign) == len(inside) else foreign[: len(inside)],
        "one spot": stacked,
        "Drag every item": [],
    }


def test_bad_arrangements_are_refused_and_store_nothing():
    study = make_study(arena_max_items=5, judgments_per_item=3)
    mine = services.participant_start(study=study)
    theirs = services.participant_start(study=study)
    trial = services.trial_current(participant=mine)
    other = services.trial_current(participant=theirs)
    assert set(trial.shown) != set(other.shown) or trial.shown != other.shown
    for message, placements in bad_placements(trial, other).items():
        with pytest.raises(TrialProblem, match=message.strip()):
            services.response_submit(participant=mine, answer=answer(trial, tuple(placements)))
    assert Response.objects.count() == 0
    assert Trial.objects.get(pk=trial.pk).status == "issued"


def test_replayed_and_forged_submissions_store_nothing_more():
    study = make_study(arena_max_items=5, judgments_per_item=3)
    mine, theirs = (services.participant_start(study=study) for _ in range(2))
    points = truth_for(study)
    trial = services.trial_current(participant=mine)
    theirs_trial = services.trial_current(participant=theirs)
    sent = answer(trial, placements_for(trial, points, 0.1))
    stored = services.response_submit(participant=mine, answer=sent)
    assert services.response_submit(participant=mine, answer=sent).pk == stored.pk  # replay
    with pytest.raises(TrialProblem, match="already been answered"):  # same trial, new key
        services.response_submit(
            participant=mine, answer=answer(trial, placements_for(trial, points, 0.1))
        )
    with pytest.raises(PermissionDenied):  # someone else's trial
        services.response_submit(
            participant=mine, answer=answer(theirs_trial, placements_for(theirs_trial, points, 0.1))
        )
    with pytest.raises(PermissionDenied):  # someone else's stored answer, replayed
        services.response_submit(participant=theirs, answer=sent)
    assert Response.objects.count() == 1


def test_failed_catches_and_unmoved_items_exclude():
    study = make_study(
        arena_max_items=6, trials_per_session=6, catch_trials=1, evidence_threshold=50.0
    )
    points = truth_for(study)
    careful = services.participant_start(study=study)
    run_session(careful, points)
    assert careful.status == "completed", careful.flags
    careless = services.participant_start(study=study)
    rng = np.random.default_rng(1)
    while (trial := services.trial_current(participant=careless)) is not None:
        angles = rng.uniform(0, 2 * np.pi, len(trial.shown))
        placed = tuple(
            Placement(s, 0.8 * math.cos(a), 0.8 * math.sin(a), 0)
            for s, a in zip(trial.shown, angles, strict=True)
        )
        services.response_submit(participant=careless, answer=answer(trial, placed))
    careless.refresh_from_db()
    assert careless.status == "excluded"
    reasons = " ".join(careless.flags)
    assert "failed 1 of 1 catch" in reasons and "items never moved" in reasons
    # Excluded at the end: its stimuli went back to the pool.
    assert careless.session_state == "released"
    assert all(counts(study)[s][0] <= 1 for s in careless.session_stimuli)


def test_arrangements_that_contradict_each_other_exclude():
    """Later trials placed from the inverted structure: pairs put close at first are put far
    apart later."""
    study = make_study(
        arena_max_items=8, trials_per_session=6, evidence_threshold=50.0, min_pair_consistency=0
    )
    points = truth_for(study)
    participant = services.participant_start(study=study)
    first = services.trial_current(participant=participant)
    services.response_submit(
        participant=participant, answer=answer(first, placements_for(first, points, 0.02))
    )
    while (trial := services.trial_current(participant=participant)) is not None:
        shown = list(trial.shown)
        truth = np.array([[np.linalg.norm(points[a] - points[b]) for b in shown] for a in shown])
        inverted = np.where(np.eye(len(shown), dtype=bool), 0.0, truth.max() * 1.5 - truth)
        xy = simulate_arrangement(inverted, list(range(len(shown))), 0.0, np.random.default_rng(0))
        xy *= 0.9 / np.linalg.norm(xy, axis=1).max()
        placed = tuple(
            Placement(s, float(x), float(y), 1) for s, (x, y) in zip(shown, xy, strict=True)
        )
        services.response_submit(participant=participant, answer=answer(trial, placed))
    participant.refresh_from_db()
    assert participant.status == "excluded"
    assert any("pairs placed twice correlate at r = -" in flag for flag in participant.flags)
    assert Study.objects.get(pk=study.pk).min_pair_consistency == 0
    assert Study._meta.get_field("min_pair_consistency").default == -1  # off unless asked


def test_a_lapsed_session_gives_its_stimuli_back_and_continues_if_they_are_free():
    study = make_study(arena_max_items=5, judgments_per_item=1)
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    Trial.objects.filter(pk=trial.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    Participant.objects.filter(pk=participant.pk).update(
        reserved_until=timezone.now() - timedelta(seconds=1)
    )
    services.trials_expire(study=study)
    participant.refresh_from_db()
    assert participant.session_state == "released"
    assert all(counts(study)[s] == (0, 0) for s in participant.session_stimuli)
    resumed = services.trial_current(participant=participant)
    assert resumed is not None and participant.session_state == "held"
    assert all(counts(study)[s] == (1, 0) for s in participant.session_stimuli)


def test_a_lapsed_session_whose_stimuli_were_taken_ends():
    study = make_study(arena_max_items=10, judgments_per_item=1)
    participant = services.participant_start(study=study)
    Participant.objects.filter(pk=participant.pk).update(
        reserved_until=timezone.now() - timedelta(seconds=1)
    )
    services.trials_expire(study=study)
    services.participant_start(study=study)  # takes all eight meanwhile
    participant.refresh_from_db()
    assert services.trial_current(participant=participant) is None
    participant.refresh_from_db()
    assert participant.status == "completed" and participant.session_state == "released"
    assert Response.objects.filter(trial__participant=participant).count() == 0


def test_a_researcher_excluding_and_including_again_moves_the_counts():
    study = make_study(arena_max_items=5, judgments_per_item=1)
    participant = services.participant_start(study=study)
    run_session(participant, truth_for(study))
    stimuli = participant.session_stimuli
    services.participant_set_excluded(participant=participant, excluded=True, reason="test")
    assert all(counts(study)[s] == (0, 0) for s in stimuli)
    services.participant_set_excluded(participant=participant, excluded=False, reason="")
    assert all(counts(study)[s] == (1, 1) for s in stimuli)


def test_exports_hold_every_placement_and_each_participants_matrix():
    study = make_study(arena_max_items=5, trials_per_session=3, evidence_threshold=50.0)
    participant = services.participant_start(study=study)
    run_session(participant, truth_for(study))
    stored = {
        (r.trial.position, i): (x, y)
        for r in Response.objects.filter(trial__participant=participant).select_related("trial")
        for i, (x, y, _) in enumerate(r.arrangement)
    }
    rows = list(exports.arrangement_rows(study))
    assert {(r["position"], r["index"]): (r["x"], r["y"]) for r in rows} == stored
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    first = [r for r in rows if r["position"] == 0]
    trial = participant.trials.get(position=0)
    assert [r["stimulus"] for r in first] == [names[s] for s in trial.shown]
    matrix = list(exports.matrix_rows(study))
    assert len(matrix) == 10 and all(r["dissimilarity"] > 0 for r in matrix)
    per_pair = list(exports.aggregate_rows(study))
    assert len(per_pair) == 10 and {r["n"] for r in per_pair} == {1}


def test_repeat_trials_are_refused_for_multi_arrangement():
    with pytest.raises(ValidationError, match="repeat pairs by design"):
        make_study(repeat_trials=1)


# --- The participant page ---------------------------------------------------------------------
def open_session(client, study: Study) -> str:
    response = client.post(study.participant_url(), {"consent": "on"})
    assert response.status_code == 302
    return response["Location"]


def test_the_arena_page_lists_the_trials_items_in_order(client):
    study = make_study(arena_max_items=5)
    url = open_session(client, study)
    page = client.get(url).content.decode()
    trial = Trial.objects.get(participant__study=study, role=TrialRole.REGULAR)
    listed = [int(s) for s in re.findall(r'class="arena-item[^"]*" data-stimulus="(\d+)"', page)]
    assert listed == trial.shown
    assert 'name="arrangement"' in page and "js/arena.js" in page


@pytest.mark.parametrize(
    "payload",
    [
        "[[1, NaN, 0, 1]]",
        '[[1, 0.1, "0.2", 1]]',
        "{}",
        "[[1, 0.1, 0.2]]",
        "not json",
    ],
)
def test_malformed_arrangements_from_the_page_are_refused(client, payload):
    study = make_study(arena_max_items=5)
    url = open_session(client, study)
    client.get(url)
    trial = Trial.objects.get(participant__study=study)
    response = client.post(
        url, {"trial": trial.pk, "key": "k1", "rt_ms": "9000", "arrangement": payload}
    )
    assert response.status_code == 400
    assert Response.objects.count() == 0


def test_an_arrangement_posted_from_the_page_is_stored_as_placed(client):
    study = make_study(arena_max_items=5)
    url = open_session(client, study)
    client.get(url)
    trial = Trial.objects.get(participant__study=study)
    placed = [
        [s, round(0.6 * math.cos(k), 4), round(0.6 * math.sin(k), 4), 2]
        for k, s in enumerate(trial.shown)
    ]
    response = client.post(
        url,
        {"trial": trial.pk, "key": "k2", "rt_ms": "9000", "arrangement": json.dumps(placed)},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    stored = Response.objects.get(trial=trial)
    assert stored.arrangement == [p[1:] for p in placed]
    assert Item.objects.filter(study=study, assigned=1).count() == 5


def test_the_study_page_shows_sessions_reliability_and_participants_needed(client, researcher):
    study = make_study(arena_max_items=8, judgments_per_item=4, evidence_threshold=3.0)
    points = truth_for(study)
    for seed in range(3):
        run_session(services.participant_start(study=study), points, noise=0.2 + 0.1 * seed)
    client.force_login(researcher)
    page = client.get(study.get_absolute_url()).content.decode()
    assert "sessions per stimulus" in page and "After participants" in page
    assert 'id="needed"' in page and "participants," in page
    assert 'id="noise-ceiling"' in page
    for what in ("arrangements", "matrices", "aggregate"):
        url = reverse("annotation:study_export", args=[study.pk, what, "csv"])
        assert client.get(url).status_code == 200


def test_a_session_released_by_its_own_requests_sweep_is_claimed_again():
    """The expiry sweep runs inside the participant's own request: the object that request
    holds still says "held" when the sweep has released the session."""
    study = make_study(arena_max_items=5, judgments_per_item=1)
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    Trial.objects.filter(pk=trial.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    Participant.objects.filter(pk=participant.pk).update(
        reserved_until=timezone.now() - timedelta(seconds=1)
    )
    services.trials_expire(study=study)  # as the sweep inside the next request would
    assert participant.session_state == "held"  # the request's stale copy
    assert services.trial_current(participant=participant) is not None
    assert Participant.objects.get(pk=participant.pk).session_state == "held"
    assert all(counts(study)[s] == (1, 0) for s in participant.session_stimuli)


def test_the_lapse_sweep_leaves_finished_and_excluded_sessions_alone():
    study = make_study(arena_max_items=5, judgments_per_item=2)
    finished = services.participant_start(study=study)
    run_session(finished, truth_for(study))
    excluded = services.participant_start(study=study)
    services.participant_set_excluded(participant=excluded, excluded=True, reason="test")
    past = timezone.now() - timedelta(seconds=1)
    Participant.objects.filter(study=study).update(reserved_until=past)
    assert services.trials_expire(study=study) == 0
    assert all(counts(study)[s][1] == 1 for s in finished.session_stimuli)
    excluded.refresh_from_db()
    # Excluded mid-session: released once, and a later visit does not claim again.
    assert excluded.session_state == "released"
    assert services.trial_current(participant=excluded) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"arrangement": "[[1, " + "9" * 400 + ", 0, 1]]"},
        {"arrangement": "[[1, 1e200, 0, 1]]"},
        {"arrangement": "[" * 50_000},
        {"trial": "nan"},
        {"rt_ms": "inf"},
    ],
)
def test_absurd_numbers_and_nesting_are_refused_not_crashes(client, fields):
    study = make_study(arena_max_items=5)
    url = open_session(client, study)
    client.get(url)
    trial = Trial.objects.get(participant__study=study)
    placed = [[s, 0.1 * k, 0.0, 1] for k, s in enumerate(trial.shown)]
    data = {"trial": trial.pk, "key": "k3", "rt_ms": "9000", "arrangement": json.dumps(placed)}
    response = client.post(url, {**data, **fields})
    assert response.status_code == 400
    assert Response.objects.count() == 0


def test_a_malformed_pilot_token_admits_nobody(client):
    study = make_study()
    services.study_set_status(study=study, status="draft")
    for token in ("%00", "x" * 300, "not-a-pilot"):
        response = client.get(study.participant_url() + f"?pilot={token}")
        assert response.status_code == 403  # the closed page: a draft study takes no one


def test_a_study_does_not_open_while_its_pilot_runs_and_bots_are_the_pilots():
    from annotation.models import Pilot

    study = make_study(arena_max_items=5)
    services.study_set_status(study=study, status="draft")
    pilot = Pilot.objects.create(study=study)
    bot = services.participant_start(study=study, pilot=pilot)
    assert bot.pilot == pilot
    with pytest.raises(ValidationError, match="pilot of this study is running"):
        services.study_set_status(study=study, status="open")
    with pytest.raises(ValidationError, match="Simulated participants"):
        services.participant_set_excluded(participant=bot, excluded=True, reason="")
    pilot.status = "finished"
    pilot.save()
    services.study_set_status(study=study, status="open")


def test_a_session_without_an_estimate_is_named_not_dropped(monkeypatch):
    from annotation import selectors
    from annotation.services import arrangements
    from evaluation.engine.arrangement import ArrangementError

    study = make_study(arena_max_items=5)
    participant = services.participant_start(study=study)
    run_session(participant, truth_for(study))

    def no_estimate(*args, **kwargs):
        raise ArrangementError("did not converge")

    monkeypatch.setattr(arrangements, "estimate_dissimilarities", no_estimate)
    with pytest.raises(ValidationError, match=f"participant {participant}.*did not converge"):
        services.study_aggregate(study=study)
    reliability = selectors.study_reliability(study)
    assert reliability["mean"] is None and "did not converge" in reliability["reason"]
    [row] = exports.matrix_rows(study)
    assert row["dissimilarity"] is None and "did not converge" in row["problem"]


def test_an_estimate_is_computed_once_per_set_of_answers(monkeypatch):
    from annotation.services import arrangements

    study = make_study(arena_max_items=5, trials_per_session=3, evidence_threshold=50.0)
    participant = services.participant_start(study=study)
    points = truth_for(study)
    trial = services.trial_current(participant=participant)
    services.response_submit(
        participant=participant, answer=answer(trial, placements_for(trial, points, 0.1))
    )
    calls = []
    real = arrangements.estimate_dissimilarities
    monkeypatch.setattr(
        arrangements, "estimate_dissimilarities", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    first = services.session_estimate(participant)
    assert services.session_estimate(participant).dissimilarities is first.dissimilarities
    assert len(calls) == 1
    trial = services.trial_current(participant=participant)  # a new answer: a new estimate
    services.response_submit(
        participant=participant, answer=answer(trial, placements_for(trial, points, 0.1))
    )
    services.session_estimate(participant)
    assert len(calls) == 2


@pytest.mark.parametrize("moves", [10**6 + 1, 10**40])
def test_an_absurd_count_of_moves_is_refused_and_nothing_stored(client, moves):
    study = make_study(arena_max_items=5)
    url = open_session(client, study)
    client.get(url)
    trial = Trial.objects.get(participant__study=study)
    placed = [[s, 0.1 * k, 0.0, 1] for k, s in enumerate(trial.shown)]
    placed[-1][3] = moves
    data = {"trial": trial.pk, "key": "k4", "rt_ms": "9000", "arrangement": json.dumps(placed)}
    response = client.post(url, data)
    assert response.status_code == 400
    assert "implausible count of moves" in response.content.decode()
    assert Response.objects.count() == 0
    placed[-1][3] = 10**6  # the most a trial may count
    response = client.post(url, {**data, "arrangement": json.dumps(placed)})
    assert response.status_code == 302 and Response.objects.count() == 1


def test_the_aggregate_export_names_a_session_without_an_estimate_and_keeps_the_others(
    client, researcher, monkeypatch
):
    from annotation import caches
    from annotation.services import arrangements
    from evaluation.engine.arrangement import ArrangementError

    study = make_study(arena_max_items=5, trials_per_session=3, evidence_threshold=50.0)
    points = truth_for(study)
    failing, fine = (services.participant_start(study=study) for _ in range(2))
    for participant in (failing, fine):
        run_session(participant, points)
    real = arrangements.estimate_dissimilarities
    failing_arrangements = arrangements.session_arrangements(failing)

    def estimate(n, arranged, **kwargs):
        if len(arranged) == len(failing_arrangements) and all(
            a == b and np.array_equal(p, q)
            for (a, p), (b, q) in zip(arranged, failing_arrangements, strict=True)
        ):
            raise ArrangementError("did not converge")
        return real(n, arranged, **kwargs)

    caches.SESSION_ESTIMATES.clear()
    monkeypatch.setattr(arrangements, "estimate_dissimilarities", estimate)
    rows = list(exports.aggregate_rows(study))
    problem, *pairs = rows
    assert problem["n"] is None and f"participant {failing}" in problem["problem"]
    assert "did not converge" in problem["problem"]
    assert len(pairs) == 10 and {r["n"] for r in pairs} == {1}
    assert all(r["problem"] == "" and r["mean"] > 0 for r in pairs)
    client.force_login(researcher)
    url = reverse("annotation:study_export", args=[study.pk, "aggregate", "csv"])
    lines = b"".join(client.get(url).streaming_content).decode().splitlines()
    assert lines[0] == "a,b,n,mean,sd,problem" and len(lines) == 12
    assert "did not converge" in lines[1]


def lapse(participant: Participant) -> None:
    """The session's open trial and hold run out, and the sweep releases it."""
    past = timezone.now() - timedelta(seconds=1)
    Trial.objects.filter(participant=participant, status="issued").update(expires_at=past)
    Participant.objects.filter(pk=participant.pk).update(reserved_until=past)
    services.trials_expire(study=participant.study)
    participant.refresh_from_db()
    assert participant.session_state == "released"


def test_a_lapsed_session_that_ends_with_arrangements_counts_on_its_stimuli():
    """It lapsed after one arrangement, another session took some of its stimuli, so it
    ends with what it has: aggregation uses its estimate, so its items count it (over
    their quota of 1 where the other session took the place) and take no further session."""
    study = make_study(arena_max_items=5, judgments_per_item=1, trials_per_session=3)
    points = truth_for(study)
    lapsed = services.participant_start(study=study)
    first = services.trial_current(participant=lapsed)
    services.response_submit(
        participant=lapsed, answer=answer(first, placements_for(first, points, 0.05))
    )
    services.trial_current(participant=lapsed)  # the second trial, left unanswered
    lapse(lapsed)
    other = services.participant_start(study=study)  # 5 of the 8, some of the lapsed one's
    assert set(other.session_stimuli) & set(lapsed.session_stimuli)
    assert services.trial_current(participant=lapsed) is None  # it cannot go on: it ends
    lapsed.refresh_from_db()
    assert (lapsed.status, lapsed.session_state) == ("completed", "counted")
    now = counts(study)
    for stimulus in lapsed.session_stimuli:
        assert now[stimulus] == (1 + (stimulus in other.session_stimuli), 1)
    run_session(other, points)
    sessions = {s: 0 for s in now}
    for participant in study.participants.filter(status="completed"):
        if services.session_estimate(participant) is not None:
            for stimulus in participant.session_stimuli:
                sessions[stimulus] += 1
    ended = counts(study)
    assert {s: done for s, (_, done) in ended.items()} == sessions
    # Excluded and included again by the researcher, the counts follow.
    services.participant_set_excluded(participant=lapsed, excluded=True, reason="test")
    excluded = counts(study)
    for stimulus in lapsed.session_stimuli:
        assert excluded[stimulus] == (ended[stimulus][0] - 1, ended[stimulus][1] - 1)
    services.participant_set_excluded(participant=lapsed, excluded=False, reason="")
    assert counts(study) == ended


def test_a_lapsed_session_that_ends_without_arrangements_never_counts():
    study = make_study(arena_max_items=5, judgments_per_item=1)
    lapsed = services.participant_start(study=study)
    services.trial_current(participant=lapsed)
    lapse(lapsed)
    other = services.participant_start(study=study)
    assert services.trial_current(participant=lapsed) is None
    lapsed.refresh_from_db()
    assert (lapsed.status, lapsed.session_state) == ("completed", "released")
    before = counts(study)
    assert all(before[s] == (s in other.session_stimuli, 0) for s in lapsed.session_stimuli)
    services.participant_set_excluded(participant=lapsed, excluded=True, reason="test")
    services.participant_set_excluded(participant=lapsed, excluded=False, reason="")
    lapsed.refresh_from_db()
    assert lapsed.session_state == "released" and counts(study) == before


def test_the_minimum_response_time_is_per_item_the_arrangement_shows():
    """500 ms per item: the first trial's 5 items are too fast under 2.5 s, a later trial's
    3 items under 1.5 s; an answer under 500 ms is flagged once."""
    study = make_study(
        arena_max_items=5, trials_per_session=3, evidence_threshold=50.0, min_response_ms=500
    )
    points = truth_for(study)
    participant = services.participant_start(study=study)
    flags = []
    for rt_ms in (2000, 2000, 400):
        trial = services.trial_current(participant=participant)
        placed = placements_for(trial, points, 0.05)
        stored = services.response_submit(
            participant=participant, answer=answer(trial, placed, rt_ms=rt_ms)
        )
        flags.append((len(trial.shown), stored.flags))
    assert flags == [(5, ["too fast"]), (3, []), (3, ["too fast"])]
    participant.refresh_from_db()
    assert services.trial_current(participant=participant) is None
    participant.refresh_from_db()
    assert participant.status == "excluded"
    assert "2 of 3 responses faster than 500 ms per item shown" in participant.flags


def arrange_through_the_page(client, study: Study, adjusted: int) -> Participant:
    """A session through the participant page, each answer posted as static/js/arena.js
    posts it: [[stimulus id, x, y, moves], ...], moves counting the drag into the circle,
    so 1 is an item dropped once and left; the first ``adjusted`` items of the first trial
    were dragged once more."""
    url = open_session(client, study)
    participant = Participant.objects.filter(study=study).latest("pk")
    number = 0
    while True:
        client.get(url)
        trial = participant.trials.filter(status="issued").first()
        if trial is None:
            break
        moves = [1 + (number == 0 and k < adjusted) for k in range(len(trial.shown))]
        placed = [
            [s, 0.7 * math.cos(2.4 * k + number), 0.7 * math.sin(2.4 * k + number), m]
            for k, (s, m) in enumerate(zip(trial.shown, moves, strict=True))
        ]
        data = {"trial": trial.pk, "key": f"page-{trial.pk}", "rt_ms": "20000"}
        response = client.post(url, {**data, "arrangement": json.dumps(placed)})
        assert response.status_code == 302, response.content.decode()
        number += 1
    participant.refresh_from_db()
    return participant


def test_items_dropped_once_and_never_adjusted_exclude_only_when_almost_none_were():
    """A session of 8 + 4 + 4 + 4 placed items: one who never adjusts an item after the drag
    that placed it is excluded; one who adjusts just 1 of the 20 (5%) is not."""
    from django.test import Client

    study = make_study(arena_max_items=8, trials_per_session=4, evidence_threshold=50.0)
    dumper = arrange_through_the_page(Client(), study, adjusted=0)
    careful = arrange_through_the_page(Client(), study, adjusted=1)
    placed = [len(t) for t in dumper.trials.values_list("shown", flat=True)]
    assert placed == [8, 4, 4, 4]
    assert dumper.status == "excluded"
    assert dumper.flags == [
        "items never moved after being dropped in: 0 of 20 placed items adjusted (fewer than 5%)"
    ]
    flags = Response.objects.filter(trial__participant=dumper).values_list("flags", flat=True)
    assert all(f == ["no item adjusted"] for f in flags)
    assert careful.status == "completed", careful.flags
    first = Response.objects.get(trial__participant=careful, trial__position=0)
    assert "no item adjusted" not in first.flags
