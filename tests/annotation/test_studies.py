"""Studies through the services: design, fair assignment within quota, exactly-once
responses, expiry, quality control, adaptive tags and aggregation into HumanJudgments."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from annotation import selectors, services
from annotation.models import (
    Item,
    Participant,
    Response,
    Study,
    Tag,
    Trial,
    TrialRole,
)
from annotation.services import Answer, ItemPlan, TrialProblem
from evaluation.models import Judgment
from tests.conftest import make_text_dataset
from tests.factories import TrialFactory

pytestmark = pytest.mark.django_db
keys = (f"key-{n}" for n in itertools.count())


def make_study(kind: str = "pairs", *, items: ItemPlan | None = None, **design) -> Study:
    design.setdefault("judgments_per_item", 2)
    design.setdefault("trials_per_session", 5)
    name = f"{kind} study {next(keys)}"
    study = services.study_create(
        dataset=make_text_dataset(name=f"sentences for {name}"),
        name=name,
        kind=kind,
        items=items or (ItemPlan() if kind == "pairs" else ItemPlan(mode="random", count=10)),
        **design,
    )
    services.study_set_status(study=study, status="open")
    return study


def answer_for(trial: Trial, **fields) -> Answer:
    study = trial.participant.study
    if study.kind == "pairs":
        fields.setdefault("value", 4)
    elif study.kind in ("triplets", "2afc"):
        fields.setdefault("chosen", trial.shown[-1])
    fields.setdefault("rt_ms", 1500)
    return Answer(trial_id=trial.pk, idempotency_key=next(keys), **fields)


def complete_session(participant: Participant, **fields) -> int:
    answered = 0
    while (trial := services.trial_current(participant=participant)) is not None:
        services.response_submit(participant=participant, answer=answer_for(trial, **fields))
        answered += 1
    return answered


def test_all_pairs_random_subsets_and_lists_make_the_items_asked_for():
    study = make_study()
    assert study.items.count() == math.comb(8, 2)
    triplets = make_study("triplets", items=ItemPlan(mode="random", count=12, seed=3))
    assert triplets.items.count() == 12
    assert all(len({i.a_id, i.b_id, i.c_id}) == 3 for i in triplets.items.all())
    with pytest.raises(ValidationError, match="repeats item 1"):
        services.study_create(
            dataset=triplets.dataset,
            name="listed",
            kind="pairs",
            items=ItemPlan(mode="list", stimuli=[(0, 1), (1, 0)]),
        )
    with pytest.raises(ValidationError, match="leave room for regular trials"):
        services.study_create(
            dataset=triplets.dataset,
            name="too many checks",
            kind="pairs",
            items=ItemPlan(),
            trials_per_session=4,
            catch_trials=2,
            repeat_trials=2,
        )


def test_no_item_goes_past_its_quota_and_nobody_sees_an_item_twice():
    study = make_study(judgments_per_item=2, trials_per_session=28)
    participants = []
    for _ in range(2):
        participants.append(services.participant_start(study=study))
        assert complete_session(participants[-1]) == 28
    # 28 items x 2 judgments: the first two participants take everything; a third is told.
    with pytest.raises(services.StudyFull):
        services.participant_start(study=study)
    assert set(Item.objects.values_list("answered", flat=True)) == {2}
    for participant in participants:
        items = list(participant.trials.values_list("item_id", flat=True))
        assert len(items) == len(set(items))


def test_least_answered_items_are_served_first():
    study = make_study(judgments_per_item=3, trials_per_session=10)
    complete_session(services.participant_start(study=study))
    second = services.participant_start(study=study)
    trial = services.trial_current(participant=second)
    # 18 items are still unanswered: one of those comes first (read back: the trial's item
    # is built in memory from the claim).
    assert Item.objects.get(pk=trial.item_id).answered == 0


def test_a_double_submission_stores_one_response_and_a_second_key_is_refused():
    study = make_study()
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    answer = answer_for(trial)
    first = services.response_submit(participant=participant, answer=answer)
    again = services.response_submit(participant=participant, answer=answer)
    assert first.pk == again.pk and Response.objects.count() == 1
    with pytest.raises(TrialProblem, match="already been answered"):
        services.response_submit(participant=participant, answer=answer_for(trial))
    assert Item.objects.get(pk=trial.item_id).answered == 1


def test_a_trial_of_another_participant_is_refused():
    study = make_study()
    alice = services.participant_start(study=study)
    bob = services.participant_start(study=study)
    trial = services.trial_current(participant=alice)
    with pytest.raises(PermissionDenied, match="not issued to you"):
        services.response_submit(participant=bob, answer=answer_for(trial))
    assert Response.objects.count() == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"value": 9}, "whole number from 1 to 7"), ({"value": 2.5}, "whole number")],
)
def test_out_of_range_ratings_are_refused(fields, message):
    study = make_study()
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    with pytest.raises(TrialProblem, match=message):
        services.response_submit(participant=participant, answer=answer_for(trial, **fields))
    assert Response.objects.count() == 0


def test_a_choice_not_in_the_trial_is_refused():
    study = make_study("triplets")
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    outside = study.dataset.stimuli.exclude(pk__in=trial.shown).first()
    with pytest.raises(TrialProblem, match="not one of this trial's options"):
        services.response_submit(
            participant=participant, answer=answer_for(trial, chosen=outside.pk)
        )


def test_an_expired_trial_returns_to_the_pool_and_cannot_be_answered():
    study = make_study(judgments_per_item=1)
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    Trial.objects.filter(pk=trial.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(TrialProblem, match="expired"):
        services.response_submit(participant=participant, answer=answer_for(trial))
    fresh = services.trial_current(participant=participant)
    assert fresh.pk != trial.pk and fresh.position == trial.position
    assert Item.objects.get(pk=trial.item_id).assigned == 0  # released for someone else


def test_items_held_by_expired_trials_go_to_the_next_participant_at_once():
    """The expiry sweep runs every few seconds, and also whenever no item seems left."""
    study = make_study(items=ItemPlan(mode="random", count=1), judgments_per_item=1)
    first = services.participant_start(study=study)
    held = services.trial_current(participant=first)  # the periodic sweep ran: next is not due
    Trial.objects.filter(pk=held.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    second = services.participant_start(study=study)
    trial = services.trial_current(participant=second)
    assert trial is not None and trial.item_id == held.item_id
    assert Trial.objects.get(pk=held.pk).status == "expired"
    assert Item.objects.get(pk=held.item_id).assigned == 1


def test_a_known_external_id_is_refused_and_the_attempt_recorded():
    study = make_study(trials_per_session=5)
    participant = services.participant_start(study=study, external_id="PID-1")
    trial = services.trial_current(participant=participant)
    services.response_submit(participant=participant, answer=answer_for(trial))
    with pytest.raises(services.ParticipantConflict) as refused:
        services.participant_start(study=study, external_id=" PID-1 ")
    assert refused.value.participant.pk == participant.pk
    assert list(participant.refused_resumes.values_list("external_id", flat=True)) == ["PID-1"]
    assert Participant.objects.filter(study=study).count() == 1
    # The participant's own session (their token) goes on where they stopped.
    assert services.trial_current(participant=participant).position == 1
    assert complete_session(participant) == 4


def test_catch_trials_and_repeats_are_planned_and_failing_catches_excludes():
    study = make_study(trials_per_session=8, catch_trials=2, repeat_trials=2, judgments_per_item=5)
    careless = services.participant_start(study=study)
    complete_session(careless, value=1)  # rates identical stimuli 1 of 7: fails both catches
    careless.refresh_from_db()
    roles = list(careless.trials.values_list("role", flat=True))
    assert roles.count(TrialRole.CATCH) == 2 and roles.count(TrialRole.REPEAT) == 2
    for repeat in careless.trials.filter(role=TrialRole.REPEAT):
        assert repeat.position > repeat.repeat_of.position
        assert set(repeat.shown) == set(repeat.repeat_of.shown)
    assert careless.status == "excluded"
    assert careless.flags == ["failed 2 of 2 catch trials"]

    careful = services.participant_start(study=study)
    while (trial := services.trial_current(participant=careful)) is not None:
        value = 7 if trial.role == TrialRole.CATCH else 4
        services.response_submit(participant=careful, answer=answer_for(trial, value=value))
    careful.refresh_from_db()
    assert careful.status == "completed" and careful.flags == []


def test_too_fast_responses_are_flagged_and_exclude():
    study = make_study(min_response_ms=500, max_fast_share=0.2)
    participant = services.participant_start(study=study)
    while (trial := services.trial_current(participant=participant)) is not None:
        services.response_submit(participant=participant, answer=answer_for(trial, rt_ms=100))
    participant.refresh_from_db()
    assert participant.status == "excluded"
    assert participant.flags == ["5 of 5 responses faster than 500 ms"]
    assert all(r.flags == ["too fast"] for r in Response.objects.all())


def test_aggregation_keeps_regular_trials_of_included_participants_only():
    study = make_study(trials_per_session=6, catch_trials=1, repeat_trials=1)
    good = services.participant_start(study=study)
    while (trial := services.trial_current(participant=good)) is not None:
        value = 7 if trial.role == TrialRole.CATCH else 3
        services.response_submit(participant=good, answer=answer_for(trial, value=value))
    bad = services.participant_start(study=study)
    complete_session(bad, value=1)
    judgments = services.study_aggregate(study=study)
    assert judgments.kind == "pairs" and judgments.judgment_count == 4  # 6 - catch - repeat
    stored = Judgment.objects.filter(judgments=judgments)
    assert set(stored.values_list("value", flat=True)) == {3.0}
    assert judgments.target.kind == "pairs"
    assert study.aggregations.get().excluded_participants == 1


def test_two_afc_keeps_the_reference_first_and_aggregates_choices():
    study = make_study("2afc", judgments_per_item=1)
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    assert trial.shown[0] == trial.item.a_id  # the reference never moves
    complete_session(participant)
    judgments = services.study_aggregate(study=study)
    assert judgments.kind == "2afc" and judgments.judgment_count == 5


def test_adaptive_tags_hide_flagged_freeze_agreed_and_complete_the_chain():
    study = make_study(
        "tags",
        tag_mode="adaptive",
        trials_per_session=1,
        judgments_per_item=1,
        max_iterations=10,
        frozen_tags_to_complete=1,
    )
    stimulus_item = None

    def iteration(**fields) -> Trial:
        nonlocal stimulus_item
        participant = services.participant_start(study=study)
        trial = services.trial_current(participant=participant)
        if stimulus_item is None:
            stimulus_item = trial.item
        assert trial.item == stimulus_item  # least-answered chain first: the same stimulus
        services.response_submit(
            participant=participant, answer=Answer(trial.pk, next(keys), **fields)
        )
        return trial

    # Only one stimulus's chain exists for this test's purposes.
    Item.objects.filter(study=study).exclude(pk=Item.objects.filter(study=study).first().pk).update(
        completed=True
    )
    iteration(new_tags=["Red  Car", "vehicle", "red car"])
    tags = {t.text: t for t in Tag.objects.all()}
    assert set(tags) == {"red car", "vehicle"}  # normalised and de-duplicated
    second = iteration(tag_ratings={tags["red car"].pk: 4, tags["vehicle"].pk: None}, new_tags=[])
    assert set(second.shown_tags) == {tags["red car"].pk, tags["vehicle"].pk}
    third = iteration(tag_ratings={tags["red car"].pk: 3, tags["vehicle"].pk: None})
    assert Tag.objects.get(text="vehicle").status == "hidden"  # two flags
    assert third.shown_tags
    iteration(tag_ratings={tags["red car"].pk: 5})
    red = Tag.objects.get(text="red car")
    assert (red.status, red.rating_count, red.mean_rating) == ("frozen", 3, 4.0)
    stimulus_item.refresh_from_db()
    assert stimulus_item.completed  # one frozen tag completes this chain
    with pytest.raises(services.StudyFull):  # nothing left to tag: told before consent
        services.participant_start(study=study)


def test_an_adaptive_chain_is_held_by_one_participant_at_a_time():
    study = make_study("tags", tag_mode="adaptive", trials_per_session=1, judgments_per_item=1)
    first = services.trial_current(participant=services.participant_start(study=study))
    second = services.trial_current(participant=services.participant_start(study=study))
    assert first.item_id != second.item_id


def test_tag_trials_need_every_shown_tag_rated():
    study = make_study("tags", tag_mode="adaptive", trials_per_session=1)
    Item.objects.filter(study=study).exclude(pk=Item.objects.filter(study=study).first().pk).update(
        completed=True
    )
    p1 = services.participant_start(study=study)
    t1 = services.trial_current(participant=p1)
    with pytest.raises(TrialProblem, match="Add at least one tag"):
        services.response_submit(participant=p1, answer=Answer(t1.pk, next(keys)))
    services.response_submit(participant=p1, answer=Answer(t1.pk, next(keys), new_tags=["cat"]))
    p2 = services.participant_start(study=study)
    t2 = services.trial_current(participant=p2)
    with pytest.raises(TrialProblem, match="Rate or flag every tag"):
        services.response_submit(participant=p2, answer=Answer(t2.pk, next(keys), new_tags=["x"]))
    with pytest.raises(TrialProblem, match="from 1 to 5"):
        services.response_submit(
            participant=p2, answer=Answer(t2.pk, next(keys), tag_ratings={t2.shown_tags[0]: 9})
        )
    assert Tag.objects.count() == 1


def test_a_study_can_flag_without_excluding():
    study = make_study(catch_trials=1, exclude_on_failure=False)
    participant = services.participant_start(study=study)
    complete_session(participant, value=1)
    participant.refresh_from_db()
    assert participant.status == "completed" and participant.flags == ["failed 1 of 1 catch trials"]


def test_practice_trials_come_first_and_are_not_data():
    study = make_study(practice_trials=2, trials_per_session=3)
    participant = services.participant_start(study=study)
    assert participant.plan[:2] == ["practice", "practice"]
    assert complete_session(participant) == 5
    roles = list(participant.trials.order_by("position").values_list("role", "item_id"))
    assert roles[:2] == [("practice", None), ("practice", None)]
    assert services.study_aggregate(study=study).judgment_count == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_participants_never_push_an_item_past_its_quota():
    """Real threads, real PostgreSQL transactions: 12 participants race for 10 items x 2."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    study = make_study(
        "triplets",
        items=ItemPlan(mode="random", count=10, seed=1),
        judgments_per_item=2,
        trials_per_session=10,
    )

    def take_part(index: int) -> int:
        try:
            participant = services.participant_start(study=study, external_id=f"t{index}")
            return complete_session(participant)
        except services.StudyFull:  # arrived when every place was taken: told, not started
            return 0
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=12) as pool:
        answered = list(pool.map(take_part, range(12)))
    assert sum(answered) == 20 == Response.objects.count()
    assert set(Item.objects.values_list("answered", "assigned")) == {(2, 2)}
    # Everyone who was let in answered at least one item (reserved at consent).
    started = Participant.objects.filter(study=study)
    assert all(p.trials.filter(role="regular", status="answered").exists() for p in started)
    pairs = list(Trial.objects.values_list("participant_id", "item_id"))
    assert len(pairs) == len(set(pairs))


def test_choice_aggregates_export_every_items_votes_under_one_header():
    import csv
    import io

    from annotation.exports import aggregate_rows, as_csv

    study = make_study("triplets", items=ItemPlan(mode="random", count=4, seed=1))
    for _ in range(2):
        complete_session(services.participant_start(study=study))
    rows = list(csv.DictReader(io.StringIO("".join(as_csv(aggregate_rows(study))))))
    assert len(rows) == 4
    for row in rows:  # each item's votes, whatever its stimuli are called
        votes = [int(row[f"votes_{slot}"]) for slot in "abc"]
        assert sum(votes) == int(row["n"]) == 2


@pytest.mark.parametrize("kind", ["pairs", "triplets", "2afc"])
def test_issued_trials_show_their_items_stimuli_in_random_order_as_stored(kind):
    """On PostgreSQL the answer and the next trial (claim and insert) are one statement: what
    the page is given must be what is stored, a reordering of the item's stimuli, with the
    2AFC reference first and both left/right orders in use; every answer stored and counted."""
    study = make_study(kind, judgments_per_item=3, trials_per_session=8)
    orders = set()
    for _ in range(3):
        participant = services.participant_start(study=study)
        trial = services.trial_current(participant=participant)
        while trial is not None:
            stored = Trial.objects.select_related("item").get(pk=trial.pk)
            item_stimuli = [s for s in (stored.item.a_id, stored.item.b_id, stored.item.c_id) if s]
            assert stored.shown == trial.shown and stored.item_id == trial.item.pk
            assert sorted(stored.shown) == sorted(item_stimuli)
            if kind == "2afc":
                assert stored.shown[0] == stored.item.a_id
            orders.add(tuple(item_stimuli.index(s) for s in stored.shown))
            _, trial = services.response_submit_and_next(
                participant=participant, answer=answer_for(trial)
            )
    assert len(orders) > 1, f"every {kind} trial showed its stimuli in one order: {orders}"
    assert Response.objects.filter(trial__participant__study=study).count() == 3 * 8
    for item in Item.objects.filter(study=study):
        assert item.assigned == item.answered <= 3


def test_an_answer_is_stored_even_if_its_next_slot_was_taken_meanwhile():
    """The answer and the next trial go to the database together; if the next slot holds a
    trial already (it cannot when requests behave, but a bug or a manual fix might), the
    answer is still stored and the trial in that slot shown."""
    study = make_study("pairs", judgments_per_item=3, trials_per_session=4)
    participant = services.participant_start(study=study)
    trial = services.trial_current(participant=participant)
    squatter = TrialFactory(participant=participant, position=trial.position + 1, shown=trial.shown)
    stored, shown_next = services.response_submit_and_next(
        participant=participant, answer=answer_for(trial)
    )
    assert Response.objects.filter(pk=stored.pk, trial=trial).exists()
    assert shown_next.pk == squatter.pk
    assert Item.objects.get(pk=trial.item.pk).answered == 1


# --- Quotas: exclusion, practice-only sessions, full studies --------------------------------
def small_study(**design) -> Study:
    """Three pairs, one judgment each, one session takes them all."""
    design.setdefault("trials_per_session", 3)
    return make_study(
        items=ItemPlan(mode="list", stimuli=[(0, 1), (2, 3), (4, 5)]),
        judgments_per_item=1,
        **design,
    )


def test_excluding_a_participant_returns_their_items_to_the_pool():
    study = small_study()
    first = services.participant_start(study=study)
    assert complete_session(first) == 3
    assert selectors.study_coverage(study).complete == 3
    study.refresh_from_db()
    assert study.status == "closed" and study.completed_at is not None  # closed itself

    services.participant_set_excluded(participant=first, excluded=True, reason="careless")
    coverage = selectors.study_coverage(study)
    assert (coverage.complete, coverage.responses) == (0, 0)
    assert set(Item.objects.values_list("assigned", "answered")) == {(0, 0)}
    study.refresh_from_db()
    assert study.status == "open" and study.completed_at is None  # reopened: it had closed itself
    services.participant_set_excluded(participant=first, excluded=True, reason="again")
    assert set(Item.objects.values_list("assigned", "answered")) == {(0, 0)}  # counted once

    second = services.participant_start(study=study)
    assert complete_session(second) == 3
    # Included again: their judgments count again (items may go past their quota).
    services.participant_set_excluded(participant=first, excluded=False, reason="")
    assert set(Item.objects.values_list("assigned", "answered")) == {(2, 2)}
    assert selectors.study_coverage(study).responses == 6


def test_participants_excluded_by_the_rules_return_their_items_too():
    study = make_study(
        items=ItemPlan(mode="list", stimuli=[(0, 1), (2, 3), (4, 5)]),
        judgments_per_item=1,
        trials_per_session=4,
        catch_trials=1,
    )
    careless = services.participant_start(study=study)
    complete_session(careless, value=1)  # fails the catch trial
    careless.refresh_from_db()
    assert careless.status == "excluded"
    assert set(Item.objects.values_list("assigned", "answered")) == {(0, 0)}
    study.refresh_from_db()
    assert study.status == "open"
    careful = services.participant_start(study=study)
    while (trial := services.trial_current(participant=careful)) is not None:
        value = 7 if trial.role == TrialRole.CATCH else 4
        services.response_submit(participant=careful, answer=answer_for(trial, value=value))
    assert set(Item.objects.values_list("answered", flat=True)) == {1}


def test_a_session_always_holds_a_regular_trial_or_is_refused_before_it_starts():
    """The last item is reserved at consent: a participant who does the practice trials
    always gets it, and one who comes after is told the study is full instead of doing the
    practice for nothing."""
    study = small_study(practice_trials=2)
    Item.objects.filter(study=study).exclude(pk=Item.objects.filter(study=study).first().pk).update(
        answered=1, assigned=1
    )
    first = services.participant_start(study=study)
    with pytest.raises(services.StudyFull):
        services.participant_start(study=study)
    assert Participant.objects.filter(study=study).count() == 1
    roles = []
    while (trial := services.trial_current(participant=first)) is not None:
        roles.append(trial.role)
        services.response_submit(participant=first, answer=answer_for(trial))
    assert roles == ["practice", "practice", "regular"]


def test_an_unused_reservation_returns_to_the_pool_after_its_time():
    study = small_study(practice_trials=1, trial_timeout_seconds=60)
    Item.objects.filter(study=study).exclude(pk=Item.objects.filter(study=study).first().pk).update(
        answered=1, assigned=1
    )
    gone = services.participant_start(study=study)  # consents, then never comes back
    Participant.objects.filter(pk=gone.pk).update(
        reserved_until=timezone.now() - timedelta(seconds=1)
    )
    late = services.participant_start(study=study)
    assert [t.role for t in iter(lambda: _answer_next(late), None)] == ["practice", "regular"]


def _answer_next(participant: Participant) -> Trial | None:
    trial = services.trial_current(participant=participant)
    if trial is not None:
        services.response_submit(participant=participant, answer=answer_for(trial))
    return trial


def test_a_full_study_closes_itself():
    study = small_study()
    complete_session(services.participant_start(study=study))
    study.refresh_from_db()
    assert study.status == "closed" and study.completed_at is not None
    with pytest.raises(PermissionDenied):
        services.participant_start(study=study)
    # Closed by the researcher: not reopened by an exclusion.
    services.study_set_status(study=study, status="open")
    services.study_set_status(study=study, status="closed")
    services.participant_set_excluded(
        participant=Participant.objects.get(study=study), excluded=True, reason=""
    )
    study.refresh_from_db()
    assert study.status == "closed" and study.completed_at is None


@pytest.mark.parametrize("address", ["javascript:alert(1)", " JAVASCRIPT:x", "data:text/html,x"])
def test_a_completion_address_must_be_a_web_address(address):
    with pytest.raises(ValidationError, match="https://"):
        make_study(redirect_url=address)


def test_every_planned_repeat_has_a_regular_trial_of_its_own_before_it():
    study = make_study(trials_per_session=8, catch_trials=2, repeat_trials=2)
    for seed in range(300):
        plan = services.session_plan(study, __import__("random").Random(seed))
        regular = repeats = 0
        for role in plan:
            regular += role == TrialRole.REGULAR
            repeats += role == TrialRole.REPEAT
            assert repeats <= regular, f"seed {seed}: {plan}"
        assert plan.count(TrialRole.REPEAT) == 2 and plan.count(TrialRole.CATCH) == 2
