"""The study write path on the embedded SQLite default.

On PostgreSQL an answer is stored, and the next trial claimed and issued, by one statement
each; SQLite has no data-modifying WITH clauses, so there the same writes run as
transactions of separate statements. The suite runs on PostgreSQL, so this test drives
that second path in a subprocess on a fresh SQLite file: sessions within quota, a double
submission, an expired trial, an adaptive tag chain (its tags stored in the same
transaction as the response), and quotas: the first regular trial reserved at consent, a
full study refusing before consent and closing itself, an exclusion returning items."""

from __future__ import annotations

from tests.conftest import embedded_env, manage_in

SCRIPT = """
import io
from collections import Counter
from django.db import connection
from annotation import services
from annotation.models import Item, Response, Tag, Trial
from annotation.services import Answer, ItemPlan, TrialProblem
from evaluation.imports.stimuli import dataset_import_texts

assert connection.vendor == "sqlite", connection.vendor
csv = "text,label\\n" + "".join(f"sentence {i},l{i % 2}\\n" for i in range(8))
dataset = dataset_import_texts(name="sentences", upload=io.BytesIO(csv.encode()))

pairs = services.study_create(dataset=dataset, name="pairs", kind="pairs",
    items=ItemPlan(mode="random", count=8, seed=0), judgments_per_item=2, trials_per_session=4)
services.study_set_status(study=pairs, status="open")
keys = iter(range(10_000))
for _ in range(3):
    participant = services.participant_start(study=pairs)
    trial = services.trial_current(participant=participant)
    while trial is not None:
        answer = Answer(trial.pk, f"k{next(keys)}", value=4, rt_ms=900)
        stored, next_trial = services.response_submit_and_next(participant=participant, answer=answer)
        again = services.response_submit(participant=participant, answer=answer)
        assert again.pk == stored.pk  # a double submission stores one response
        trial = next_trial
responses = Response.objects.filter(trial__participant__study=pairs)
assert responses.count() == 12, responses.count()
per_item = Counter(responses.values_list("trial__item_id", flat=True))
assert max(per_item.values()) <= 2, per_item
for item in Item.objects.filter(study=pairs):
    assert item.answered == item.assigned == per_item.get(item.pk, 0), item

late = services.participant_start(study=pairs)
trial = services.trial_current(participant=late)
Trial.objects.filter(pk=trial.pk).update(status="expired")
try:
    services.response_submit(participant=late, answer=Answer(trial.pk, "late", value=4))
except TrialProblem as problem:
    assert "expired" in str(problem), problem
else:
    raise AssertionError("an expired trial was answered")
assert not Response.objects.filter(idempotency_key="late").exists()

tags = services.study_create(dataset=dataset, name="tags", kind="tags", items=ItemPlan(),
    tag_mode="adaptive", judgments_per_item=1, trials_per_session=1, max_iterations=5)
services.study_set_status(study=tags, status="open")
Item.objects.filter(study=tags).exclude(pk=Item.objects.filter(study=tags).first().pk).update(
    completed=True)
def iteration(**fields):
    participant = services.participant_start(study=tags)
    trial = services.trial_current(participant=participant)
    services.response_submit(participant=participant, answer=Answer(trial.pk, f"k{next(keys)}", **fields))
    return trial
iteration(new_tags=["Red Car", "vehicle"])
made = {t.text: t.pk for t in Tag.objects.filter(study=tags)}
assert set(made) == {"red car", "vehicle"}, made
second = iteration(tag_ratings={made["red car"]: 4, made["vehicle"]: None})
assert set(second.shown_tags) == set(made.values())
assert Tag.objects.get(pk=made["vehicle"]).flag_count == 1
assert Tag.objects.get(pk=made["red car"]).rating_count == 1
quota = services.study_create(dataset=dataset, name="quota", kind="pairs",
    items=ItemPlan(mode="list", stimuli=[(0, 1), (2, 3)]), judgments_per_item=1,
    trials_per_session=2, practice_trials=1)
services.study_set_status(study=quota, status="open")
def session(participant):
    roles = []
    trial = services.trial_current(participant=participant)
    while trial is not None:
        roles.append(trial.role)
        answer = Answer(trial.pk, f"k{next(keys)}", value=4, rt_ms=900)
        _, trial = services.response_submit_and_next(participant=participant, answer=answer)
    return roles
first = services.participant_start(study=quota)
assert session(first) == ["practice", "regular", "regular"]
quota.refresh_from_db()
assert quota.status == "closed" and quota.completed_at is not None, quota.status
services.participant_set_excluded(participant=first, excluded=True, reason="test")
assert set(Item.objects.filter(study=quota).values_list("assigned", "answered")) == {(0, 0)}
quota.refresh_from_db()
assert quota.status == "open"
second = services.participant_start(study=quota)
third = services.participant_start(study=quota)  # holds the other item
try:
    services.participant_start(study=quota)
except services.StudyFull:
    pass
else:
    raise AssertionError("a fourth participant was let in with no item left")
assert session(second) == ["practice", "regular"]  # the other item is third's
assert session(third) == ["practice", "regular"]
assert set(Item.objects.filter(study=quota).values_list("assigned", "answered")) == {(1, 1)}
print("SQLITE WRITES OK")
"""


def test_study_writes_on_sqlite(tmp_path):
    env = embedded_env(tmp_path / "var")
    manage_in(env, "migrate", "--noinput")
    assert "SQLITE WRITES OK" in manage_in(env, "shell", "-c", SCRIPT).stdout
