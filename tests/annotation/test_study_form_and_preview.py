"""The researcher's study pages of issue 23: the design form grouped by study kind, the
participant preview of a study (which records nothing), and the way from an aggregate to
its target and to a run that scores models against it."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from annotation import services
from annotation.forms import DESIGN_FIELDS, FIELD_GROUPS, FIELD_KINDS, StudyForm
from annotation.models import Item, Participant, Response, Study, Trial
from annotation.services import ItemPlan
from tests.annotation.test_studies import complete_session
from tests.annotation.test_study_pages import FORM_DEFAULTS
from tests.conftest import make_image_dataset, make_text_dataset
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TAG_FIELDS = ("tag_mode", "flags_to_hide", "ratings_to_freeze", "freeze_mean", "max_iterations")
ARRANGEMENT_FIELDS = ("arena_max_items", "evidence_threshold", "session_seconds")


def field_names(html: str) -> set[str]:
    return set(re.findall(r'name="([a-z_]+)"', html))


# --- The design form --------------------------------------------------------------------------
def test_every_form_field_is_in_one_group_and_in_the_tests_defaults():
    grouped = [name for group in FIELD_GROUPS for name in group.fields]
    assert sorted(grouped) == sorted(StudyForm.base_fields)  # each once, none left out
    assert set(DESIGN_FIELDS) <= set(FORM_DEFAULTS)


def test_a_pairs_form_has_no_tag_or_arrangement_fields(client, researcher):
    client.force_login(researcher)
    html = client.get(reverse("annotation:study_create") + "?kind=pairs").content.decode()
    names = field_names(html)
    assert {"scale_min", "scale_max_label", "max_retest_difference", "item_mode"} <= names
    assert not names & {*TAG_FIELDS, *ARRANGEMENT_FIELDS, "min_retest_agreement"}
    assert '<input type="hidden" name="kind" value="pairs">' in html
    assert "<legend>Rating scale" in html and "<legend>Tagging" not in html


def test_a_tags_form_has_its_fields_and_not_the_scale_or_items(client, researcher):
    client.force_login(researcher)
    html = client.get(reverse("annotation:study_create") + "?kind=tags").content.decode()
    names = field_names(html)
    assert set(TAG_FIELDS) <= names
    assert not names & {"scale_min", "item_mode", "catch_trials", "repeat_trials"}


def test_without_a_kind_every_group_is_there_marked_with_its_kinds(client, researcher):
    """Without JavaScript and without ?kind=, every group is shown (the script hides the
    others once a kind is chosen), each saying which kinds use it."""
    client.force_login(researcher)
    html = client.get(reverse("annotation:study_create")).content.decode()
    assert set(TAG_FIELDS) | set(ARRANGEMENT_FIELDS) | {"scale_min"} <= field_names(html)
    assert '<fieldset class="study-group" data-kinds="tags">' in html
    assert '<legend>Tagging <small class="muted">(Tagging only)</small></legend>' in html
    assert "js/study_form.js" in html


def test_a_triplet_form_starts_from_a_random_subset(client, researcher):
    """'All pairs' is for pair studies: a triplet form does not offer it as its start."""
    client.force_login(researcher)
    html = client.get(reverse("annotation:study_create") + "?kind=triplets").content.decode()
    assert re.search(r'<input type="radio" name="item_mode" value="random"[^>]* checked', html)
    assert "<legend>Rating scale" not in html and 'name="min_retest_agreement"' in html


def test_labels_are_words_and_help_says_units_and_defaults():
    form = StudyForm()
    assert form["consent_md"].label == "Consent text (Markdown)"
    assert form["trial_timeout_seconds"].label == "Trial timeout (seconds)"
    assert form["min_response_ms"].label == "Fastest plausible answer (milliseconds)"
    assert "(default 600)" in form["trial_timeout_seconds"].help_text
    assert "(default 20)" in form["trials_per_session"].help_text
    assert not [name for name, field in form.fields.items() if "_" in str(field.label or "_")]


def test_fields_the_kind_does_not_use_are_ignored_at_their_defaults(client, researcher):
    """A tag study posted from the page of every kind without JavaScript (it holds every
    group): fields it does not use, at their defaults or left blank, and the items (a tag
    study asks about every stimulus, as the page says) do not stop it."""
    dataset = make_text_dataset()
    client.force_login(researcher)
    response = client.post(
        reverse("annotation:study_create"),
        {
            **FORM_DEFAULTS,
            "name": "tags ignoring the scale",
            "kind": "tags",
            "dataset": dataset.pk,
            "scale_min": "",
            "scale_max_label": "",
            "min_retest_agreement": "",
            "item_mode": "list",  # would need a file
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    study = Study.objects.get(name="tags ignoring the scale")
    assert (study.scale_min, study.scale_max_label, study.min_retest_agreement) == (
        1,
        "Very similar",
        0.5,
    )
    assert study.items.count() == dataset.stimulus_count


@pytest.mark.parametrize(
    ("kind", "field", "value", "error"),
    [
        (
            "arrangement",
            "repeat_trials",
            2,
            "Multi-arrangement studies repeat pairs by design (later trials show pairs again); "
            "their consistency is checked without repeat trials.",
        ),
        ("tags", "catch_trials", 3, "Tag studies have no repeat or catch trials."),
        (
            "tags",
            "scale_max",
            9,
            "Only pair rating studies use this setting: a tagging study leaves it at its "
            "default (7).",
        ),
        (
            "triplets",
            "max_retest_difference",
            1.0,
            "Only pair rating studies use this setting: a triplet study leaves it at its "
            "default (2.0).",
        ),
        (
            "pairs",
            "min_retest_agreement",
            0.8,
            "Only triplet and 2AFC studies use this setting: a pair rating study leaves it at "
            "its default (0.5).",
        ),
        (
            "arrangement",
            "require_playback",
            "on",
            "Multi-arrangement trials show dozens of clips at once, played on demand; waiting "
            "for each to play through is for the other kinds.",
        ),
    ],
)
def test_a_value_the_kind_does_not_use_is_refused_at_its_field(
    client, researcher, kind, field, value, error
):
    """Not replaced by the default without a word: the design checks refuse it, at the
    field, in their own words."""
    client.force_login(researcher)
    response = client.post(
        reverse("annotation:study_create"),
        {
            **FORM_DEFAULTS,
            "name": "a setting of another kind",
            "kind": kind,
            "dataset": make_text_dataset().pk,
            "item_mode": "random",
            "item_count": 5,
            field: value,
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {field: [error]}
    assert not Study.objects.exists()


def test_the_form_and_the_design_checks_share_one_table_of_kinds():
    from annotation.services import design

    for name, kinds in design.FIELD_KINDS.items():
        assert FIELD_KINDS[name] is kinds
    with pytest.raises(ValidationError) as refused:
        services.study_create(
            dataset=make_text_dataset(),
            name="tags with a scale",
            kind="tags",
            items=ItemPlan(),
            scale_min_label="Unlike",
        )
    assert refused.value.message_dict == {
        "scale_min_label": [
            "Only pair rating studies use this setting: a tagging study leaves it at its "
            "default ('Not at all similar')."
        ]
    }


def test_after_a_refused_submit_the_kind_can_still_be_changed(client, researcher):
    """The page of every kind re-rendered after an error still holds every kind's fields
    (the script shows the chosen kind's); a post of another kind without the fields the
    script disabled takes their defaults instead of calling them required."""
    dataset = make_text_dataset()
    client.force_login(researcher)
    url = reverse("annotation:study_create")
    refused = client.post(
        url, {**FORM_DEFAULTS, "name": "", "kind": "pairs", "dataset": dataset.pk}
    )
    assert refused.status_code == 200
    assert refused.context["form"].errors == {"name": ["This field is required."]}
    html = refused.content.decode()
    assert {*TAG_FIELDS, *ARRANGEMENT_FIELDS, "min_retest_agreement"} <= field_names(html)
    assert "<legend>Tagging" in html and "<legend>Rating scale" in html
    # Triplets chosen: the script disables what triplets do not use, so it is not sent.
    sent = {
        name: value
        for name, value in FORM_DEFAULTS.items()
        if "triplets" in FIELD_KINDS.get(name, {"triplets"})
    }
    del sent["min_retest_agreement"]  # and a page of the pairs' fields only lacked this
    created = client.post(
        url,
        {
            **sent,
            "name": "triplets after all",
            "kind": "triplets",
            "dataset": dataset.pk,
            "item_mode": "random",
            "item_count": 5,
        },
    )
    assert created.status_code == 302, created.context["form"].errors
    study = Study.objects.get(name="triplets after all")
    assert (study.kind, study.min_retest_agreement, study.scale_max) == ("triplets", 0.5, 7)
    assert study.items.count() == 5


def test_a_form_for_one_kind_shows_its_fields_after_a_refused_submit(client, researcher):
    client.force_login(researcher)
    refused = client.post(
        reverse("annotation:study_create") + "?kind=tags",
        {**FORM_DEFAULTS, "name": "", "kind": "tags", "dataset": make_text_dataset().pk},
    )
    names = field_names(refused.content.decode())
    assert set(TAG_FIELDS) <= names and not names & {"scale_min", "min_retest_agreement"}


def test_a_field_the_kind_uses_is_still_checked(client, researcher):
    client.force_login(researcher)
    response = client.post(
        reverse("annotation:study_create") + "?kind=pairs",
        {
            **FORM_DEFAULTS,
            "name": "bad scale",
            "kind": "pairs",
            "dataset": make_text_dataset().pk,
            "item_mode": "all",
            "scale_min": "not a number",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["scale_min"] == ["Enter a whole number."]
    assert not Study.objects.filter(name="bad scale").exists()


# --- The participant preview --------------------------------------------------------------------
@pytest.fixture
def draft(researcher) -> Study:
    return services.study_create(
        dataset=make_text_dataset(),
        name="Draft to preview",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=1,
        trials_per_session=6,
        practice_trials=1,
        catch_trials=1,
        repeat_trials=1,
        consent_md="Please read **this**.",
        instructions_md="Rate how similar the two sentences are.",
        created_by=researcher,
    )


def walk_preview(client: Client, study: Study) -> list[str]:
    """Agree on the preview's first page, answer every preview trial; the roles shown."""
    entry = client.get(reverse("annotation:study_preview", args=[study.pk]))
    assert entry.status_code == 200
    assert "<strong>this</strong>" in entry.content.decode()
    url = client.post(reverse("annotation:study_preview", args=[study.pk]), {"consent": "on"})[
        "Location"
    ]
    roles = []
    for _ in range(20):
        page = client.get(url)
        assert page.status_code == 200
        if "completion-code" in page.content.decode():
            return roles
        html = page.content.decode()
        roles.append(re.search(r'id="preview-role" data-role="(\w+)"', html).group(1))
        assert 'class="scale"' in html  # the participant page's own rating scale
        action = (
            re.search(r'<form method="post" action="([^"]+)"', html).group(1).replace("&amp;", "&")
        )
        answered = client.post(action, {"value": "4", "trial": "None", "key": "x"})
        assert answered.status_code == 302
        url = answered["Location"]
    raise AssertionError("the preview never ended")


def test_the_preview_shows_each_role_and_records_nothing(client, researcher, draft):
    client.force_login(researcher)
    items = list(Item.objects.filter(study=draft).values_list("pk", "assigned", "answered"))
    roles = walk_preview(client, draft)
    assert sorted(set(roles)) == ["catch", "practice", "regular", "repeat"]
    assert roles[0] == "practice" and roles.count("regular") == 2
    assert not Participant.objects.exists()
    assert not Trial.objects.exists() and not Response.objects.exists()
    assert list(Item.objects.filter(study=draft).values_list("pk", "assigned", "answered")) == items
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_a_preview_of_an_open_study_takes_no_place(client, researcher, draft):
    """One item left: the preview shows it and a participant still gets it."""
    services.study_set_status(study=draft, status="open")
    Item.objects.filter(study=draft).exclude(pk=draft.items.first().pk).update(assigned=1)
    client.force_login(researcher)
    walk_preview(client, draft)
    assert services.study_has_room(study=draft)


def test_the_preview_of_image_stimuli_shows_them_to_the_researcher(client, researcher):
    study = services.study_create(
        dataset=make_image_dataset(name="digits to preview"),
        name="Image triplets",
        kind="triplets",
        items=ItemPlan(mode="random", count=5),
        trials_per_session=2,
    )
    client.force_login(researcher)
    page = client.get(reverse("annotation:study_preview_trial", args=[study.pk, 0]) + "?seed=3")
    html = page.content.decode()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 3 and "Which one is the odd one out?" in html
    for source in sources:
        assert source.startswith("/stimuli/") or "/stimuli/" in source
        assert client.get(source).status_code == 200


@pytest.mark.parametrize(
    ("kind", "design", "marker"),
    [
        ("triplets", {"catch_trials": 1}, "Which one is the odd one out?"),
        ("2afc", {"catch_trials": 1}, "more similar to the one above?"),
        ("tags", {}, "Describe it with a few tags"),
        ("tags", {"tag_mode": "adaptive"}, "Describe it with a few tags"),
        ("arrangement", {"catch_trials": 1}, 'class="arena-item text"'),
    ],
)
def test_every_kind_of_study_previews_with_its_participant_page(
    client, researcher, kind, design, marker
):
    study = services.study_create(
        dataset=make_text_dataset(),
        name=f"{kind} preview",
        kind=kind,
        items=ItemPlan(mode="random", count=6) if kind in ("triplets", "2afc") else ItemPlan(),
        trials_per_session=4,
        practice_trials=1,
        **design,
    )
    client.force_login(researcher)
    step, roles = 0, []
    while step < 10:
        page = client.get(reverse("annotation:study_preview_trial", args=[study.pk, step]))
        html = page.content.decode()
        if "completion-code" in html:
            break
        assert page.status_code == 200 and marker in html, html[:3000]
        roles.append(re.search(r'data-role="(\w+)"', html).group(1))
        step += 1
    expected = (
        {"practice", "regular", "catch"}
        if design.get("catch_trials")
        else {
            "practice",
            "regular",
        }
    )
    assert set(roles) == expected
    if kind == "arrangement":  # the first arrangement only: the later ones need answers
        assert roles.count("regular") == 1
    assert not Participant.objects.exists() and not Trial.objects.exists()


@pytest.mark.parametrize("seed", ["\u00b2", "\u0663", "1e309", "-1", str(2**31), "x"])
def test_a_seed_that_is_not_a_number_previews_with_seed_0(client, researcher, draft, seed):
    """The seed is read as ASCII digits within range (core.querystring): '\u00b2' passes
    str.isdigit() but int() refuses it, which was a 500."""
    client.force_login(researcher)
    url = reverse("annotation:study_preview_trial", args=[draft.pk, 1])
    page = client.get(url, {"seed": seed})
    assert page.status_code == 200
    assert f'action="{url}?seed=0"' in page.content.decode()


def test_a_preview_fetches_no_suggestions_and_reports_no_completion(client, researcher):
    """A preview's participant is not stored: its free-tag field asks for no suggestions (the
    suggest address would be a 404 on each keystroke), and the last page shows where a
    participant returns with the completion code without linking there."""
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Tags to preview",
        kind="tags",
        items=ItemPlan(),
        trials_per_session=1,
        redirect_url="https://app.prolific.com/submissions/complete",
    )
    client.force_login(researcher)
    trial = client.get(reverse("annotation:study_preview_trial", args=[study.pk, 0]))
    html = trial.content.decode()
    assert 'id="new-tags"' in html and "data-suggest" not in html
    done = client.get(reverse("annotation:study_preview_trial", args=[study.pk, 1]))
    html = done.content.decode()
    return_url = f"{study.redirect_url}?cc={study.completion_code}"
    assert 'id="completion-code"' in html and f'href="{return_url}"' not in html
    assert '<a class="button" id="return-link" aria-disabled="true">' in html
    assert f"a participant is sent to {return_url}; not followed" in html


def test_a_participant_still_gets_tag_suggestions(client):
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Tags for real",
        kind="tags",
        items=ItemPlan(),
        trials_per_session=1,
        redirect_url="https://app.prolific.com/submissions/complete",
    )
    services.study_set_status(study=study, status="open")
    participant = services.participant_start(study=study)
    page = client.get(reverse("annotation:participant_trial", args=[participant.token]))
    suggest = reverse("annotation:tag_suggest", args=[participant.token])
    assert f'data-suggest="{suggest}"' in page.content.decode()


def test_a_preview_is_for_researchers_only(client, draft):
    url = reverse("annotation:study_preview", args=[draft.pk])
    trial = reverse("annotation:study_preview_trial", args=[draft.pk, 0])
    assert client.get(url)["Location"].startswith(reverse("login"))
    assert client.get(trial)["Location"].startswith(reverse("login"))
    client.force_login(UserFactory(username="someone"))
    assert client.get(url).status_code == 403
    assert client.post(trial, {"value": "4"}).status_code == 403


def test_the_study_page_links_to_its_preview(client, researcher, draft):
    client.force_login(researcher)
    html = client.get(draft.get_absolute_url()).content.decode()
    preview_url = reverse("annotation:study_preview", args=[draft.pk])
    assert f'<a href="{preview_url}" class="button">Preview as a participant</a>' in html


# --- From an aggregate to its target --------------------------------------------------------------
def test_aggregating_leads_to_the_target_and_a_run_against_it(client, researcher, draft):
    services.study_set_status(study=draft, status="open")
    participant = services.participant_start(study=draft)
    complete_session(participant, value=7)  # 7: the catch trial's answer too
    client.force_login(researcher)
    response = client.post(reverse("annotation:study_aggregate", args=[draft.pk]))
    assert response["Location"].endswith("#aggregate-result")
    html = client.get(response["Location"]).content.decode()
    target = draft.aggregations.get().judgments.target
    assert f'<a href="{target.get_absolute_url()}" id="aggregate-target">{target.name}</a>' in html
    run_url = f"{reverse('evaluation:run_create')}?target={target.pk}"
    assert f'href="{run_url}">Score models against it</a>' in html
    form = client.get(run_url).context["form"]
    assert form.initial["dataset"] == draft.dataset_id
    assert form["metric_pair_alignment"].initial is True  # scores pair ratings
    assert form["metric_knn"].initial is False  # needs labels: not this target
