"""A researcher's study pages in a real browser: the design form shows only the chosen kind's
fields (static/js/study_form.js), the participant preview of a draft walks through consent,
each role's trials (with htmx, as participants answer) and the last page while nothing is
recorded, and after Aggregate the new target's link and 'Score models against it' open the
run form for that target. No Content-Security-Policy violation on the way."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from annotation import services
from annotation.models import Item, Participant, Response, Study, Trial
from annotation.services import ItemPlan
from evaluation.models import Target
from tests.annotation.test_studies import complete_session
from tests.conftest import make_text_dataset
from tests.e2e.conftest import screenshot
from tests.e2e.test_csp import watch_violations
from tests.e2e.test_dashboard import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def draft_study(researcher, **design) -> Study:
    return services.study_create(
        dataset=make_text_dataset(),
        name="Sentences, previewed",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=1,
        trials_per_session=5,
        practice_trials=1,
        catch_trials=1,
        repeat_trials=1,
        consent_md="You may stop **at any time**.",
        instructions_md="Rate how similar the two sentences are.",
        created_by=researcher,
        **design,
    )


def test_the_study_form_shows_the_chosen_kinds_fields(page, live_server, researcher):
    make_text_dataset()
    violations = watch_violations(page)
    log_in(page, live_server, reverse("annotation:study_create"))
    tagging = page.locator("fieldset[data-kinds='tags']")
    scale = page.locator("fieldset[data-kinds='pairs']")
    page.get_by_label("Kind of study").select_option("pairs")
    expect(tagging).to_be_hidden()
    expect(scale).to_be_visible()
    expect(page.get_by_label("Consent text (Markdown)")).to_be_visible()
    expect(page.get_by_label("Least agreement of repeated choices")).to_be_hidden()
    screenshot(page, "study-form-pairs")
    page.get_by_label("Kind of study").select_option("tags")
    expect(tagging).to_be_visible()
    expect(scale).to_be_hidden()
    expect(page.get_by_label("Catch trials per session")).to_be_hidden()
    screenshot(page, "study-form-tags")
    # Hidden fields are disabled: the browser neither checks nor sends them.
    assert page.locator("input[name=scale_min]").is_disabled()
    page.get_by_label("Study name").fill("Tags from the form")
    page.get_by_label("Dataset", exact=True).select_option(label="sentences")
    page.get_by_role("button", name="Create study").click()
    page.wait_for_url(re.compile(r"/studies/\d+/$"))
    study = Study.objects.get(name="Tags from the form")
    assert (study.kind, study.scale_min, study.scale_max) == ("tags", 1, 7)
    assert not violations, "\n".join(violations)


def test_after_a_refused_submit_another_kind_can_be_chosen(page, live_server, researcher):
    """The page of every kind, refused once (a name in use) as a pair study, still holds the
    other kinds' fields: choosing triplets shows them, moves 'All pairs' to a random subset,
    and the study is created with the defaults of what triplets do not use."""
    dataset = draft_study(researcher).dataset  # its name is taken
    violations = watch_violations(page)
    log_in(page, live_server, reverse("annotation:study_create"))
    page.get_by_label("Kind of study").select_option("pairs")
    page.get_by_label("Study name").fill("Sentences, previewed")
    page.get_by_label("Dataset", exact=True).select_option(label=dataset.name)
    page.get_by_role("button", name="Create study").click()
    expect(page.locator("#form-errors")).to_contain_text("already exists")
    agreement = page.get_by_label("Least agreement of repeated choices")
    expect(agreement).to_be_hidden()
    page.get_by_label("Kind of study").select_option("triplets")
    expect(agreement).to_be_visible()
    expect(page.locator("input[name=item_mode][value=random]")).to_be_checked()
    expect(page.get_by_label("Lowest rating", exact=True)).to_be_hidden()
    page.get_by_label("Study name").fill("Triplets after all")
    page.get_by_label("Number of random items (N)").fill("5")
    page.get_by_role("button", name="Create study").click()
    page.wait_for_url(re.compile(r"/studies/\d+/$"))
    study = Study.objects.get(name="Triplets after all")
    assert (study.kind, study.items.count(), study.min_retest_agreement) == ("triplets", 5, 0.5)
    assert not violations, "\n".join(violations)


def test_preview_of_a_draft_records_nothing(page, live_server, researcher):
    study = draft_study(researcher)
    items = list(Item.objects.filter(study=study).values_list("pk", "assigned", "answered"))
    violations = watch_violations(page)
    log_in(page, live_server, study.get_absolute_url())
    page.get_by_role("link", name="Preview as a participant").click()
    expect(page.locator("#preview-note")).to_contain_text("Nothing here is recorded")
    expect(page.locator(".consent strong")).to_have_text("at any time")
    page.get_by_label(re.compile("agree to take part")).check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/preview/0/\?seed=\d+$"))
    roles = []
    for _ in range(10):
        if page.locator("#completion-code").count():
            break
        role = page.locator("#preview-role")
        expect(role).to_be_visible()
        roles.append(role.get_attribute("data-role"))
        if len(roles) == 1:
            screenshot(page, "study-preview-trial")
        expect(page.locator("#trial .scale button")).to_have_count(7)
        page.locator("#trial .scale button[value='7']").click()  # htmx: the next one loads
        # htmx posts the answer; the preview answers with the next step's page (HX-Redirect)
        page.wait_for_url(re.compile(rf"/preview/{len(roles)}/\?seed=\d+$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    screenshot(page, "study-preview-done")
    assert sorted(set(roles)) == ["catch", "practice", "regular", "repeat"]
    assert not Participant.objects.exists() and not Trial.objects.exists()
    assert not Response.objects.exists()
    assert list(Item.objects.filter(study=study).values_list("pk", "assigned", "answered")) == items
    assert not violations, "\n".join(violations)


def test_aggregate_then_score_models_against_the_new_target(page, live_server, researcher):
    study = draft_study(researcher)
    services.study_set_status(study=study, status="open")
    complete_session(services.participant_start(study=study), value=7)
    log_in(page, live_server, study.get_absolute_url())
    page.get_by_role("button", name="Aggregate into a new HumanJudgments version").click()
    page.wait_for_url(re.compile(r"#aggregate-result$"))
    target = study.aggregations.get().judgments.target
    result = page.locator("#aggregate-result")
    expect(result.get_by_role("link", name=target.name)).to_have_attribute(
        "href", target.get_absolute_url()
    )
    screenshot(page, "study-aggregate-result")
    result.get_by_role("link", name="Score models against it").click()
    page.wait_for_url(re.compile(rf"/runs/new/\?target={target.pk}$"))
    expect(page.locator("select[name=dataset]")).to_have_value(str(study.dataset_id))
    expect(page.locator("input[name=metric_pair_alignment]")).to_be_checked()
    # Only the new target is ticked, so only its kind's metrics are offered; ticking the
    # dataset's labels target too brings the label metrics, ticked (htmx swaps them in).
    expect(page.locator(f"#id_targets_{target.pk}")).to_be_checked()
    labels = Target.objects.get(dataset=study.dataset, kind="labels")
    expect(page.locator(f"#id_targets_{labels.pk}")).not_to_be_checked()
    expect(page.locator("input[name=metric_knn]")).to_have_count(0)
    page.locator(f"#id_targets_{labels.pk}").check()
    expect(page.locator("input[name=metric_knn]")).to_be_checked()
    expect(page.locator("input[name=metric_pair_alignment]")).to_be_checked()
