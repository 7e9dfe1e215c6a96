"""Participants, in a real browser and with the keyboard only: consent, answer every trial of
a pair-rating study with the number keys and of an adaptive tag study with arrow keys, Tab
and Enter, and reach the completion code. The researcher's exports then hold exactly those
answers. A phone-sized viewport gets a screenshot of the same pages."""

from __future__ import annotations

import csv
import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from annotation import services
from annotation.models import Item, Participant, Response, Tag, TagRating
from annotation.services import Answer, ItemPlan
from tests.conftest import make_text_dataset
from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}


def focused(page) -> dict[str, str]:
    """What has the keyboard focus: tag, id, type, name and value."""
    return page.evaluate(
        """() => { const e = document.activeElement;
        return {tag: e.tagName.toLowerCase(), id: e.id || "", type: e.type || "",
                name: e.name || "", value: e.value || "", text: e.textContent.trim()}; }"""
    )


def consent_with_keyboard(page) -> None:
    """Shift+Tab back to the consent box (from an autofocused Start, or from the page, where
    it starts at the last control), tick it with Space, Tab on to Start and press Enter."""
    for _ in range(5):
        if focused(page)["id"] == "id_consent":
            break
        page.keyboard.press("Shift+Tab")
    assert focused(page)["id"] == "id_consent"
    page.keyboard.press("Space")
    assert page.get_by_label(re.compile("agree to take part")).is_checked()
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Start"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/p/[\w-]+/$"))


def wait_for_trial(page, number: int, total: int) -> None:
    """Until trial ``number`` is on screen and htmx has settled it: new content is bound
    (hx-post and all) only at settle time, and a key pressed before that posts natively."""
    expect(page.locator("#trial > p.muted")).to_contain_text(f"Trial {number} of {total}")
    expect(page.locator("#trial.htmx-added")).to_have_count(0)


def open_on_phone(browser, url: str) -> tuple[object, object]:
    """Open a participant page on a phone-sized screen (a context of its own)."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    phone.set_default_timeout(20_000)
    phone.goto(url)
    return context, phone


def researcher_export(browser, live_server, study, what: str) -> list[dict[str, str]]:
    """Log in as the researcher, open the study and download one CSV export from its link."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{live_server.url}{study.get_absolute_url()}")
        page.get_by_label("Username").fill("rita")
        page.get_by_label("Password").fill("rita-pass-123")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(rf"/studies/{study.pk}/$"))
        href = reverse("annotation:study_export", args=[study.pk, what, "csv"])
        with page.expect_download() as download:
            page.locator(f"a[href='{href}']").click()
        assert download.value.suggested_filename == f"study-{study.pk}-{what}.csv"
        with open(download.value.path(), newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    finally:
        context.close()


def test_pair_rating_study_by_keyboard_and_its_export(browser, page, live_server, researcher):
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Sentence pairs (e2e)",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=3,
        trials_per_session=5,
        practice_trials=1,
        consent_md="This study takes **two minutes**. You may stop at any time.",
        instructions_md="Rate how similar the two sentences are *in meaning*.",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")

    page.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=e2e-1")
    expect(page.locator(".consent strong")).to_have_text("two minutes")
    screenshot(page, "study-consent")
    consent_with_keyboard(page)
    participant_url = page.url
    page.evaluate("window.sameDocument = true")  # gone if a trial loaded as a new page

    typed = ["4", "1", "7", "2", "5", "6"]  # the practice trial, then five regular ones
    total = len(typed)
    for number, key in enumerate(typed, start=1):
        wait_for_trial(page, number, total)
        assert page.evaluate("window.sameDocument === true"), "not swapped in place by htmx"
        if number == 1:
            expect(page.locator("#trial > p.muted")).to_contain_text("practice")
        if number == 2:
            screenshot(page, "study-pair-trial")
            context, phone = open_on_phone(browser, participant_url)
            expect(phone.locator("#trial > p.muted")).to_contain_text(f"Trial 2 of {total}")
            for point in range(study.scale_min, study.scale_max + 1):
                expect(phone.locator(f".scale button[data-key='{point}']")).to_be_visible()
            screenshot(phone, "study-pair-trial-phone")
            context.close()
        page.keyboard.press(key)
    page.wait_for_url(re.compile(r"/done/$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    screenshot(page, "study-done")

    participant = Participant.objects.get(study=study)
    assert (participant.external_id, participant.status) == ("e2e-1", "completed")
    rows = researcher_export(browser, live_server, study, "responses")
    assert len(rows) == total
    rows.sort(key=lambda row: int(row["position"]))
    assert [float(row["value"]) for row in rows] == [float(key) for key in typed]
    assert [row["role"] for row in rows] == ["practice"] + ["regular"] * (total - 1)
    assert {row["external_id"] for row in rows} == {"e2e-1"}
    assert {row["participant_status"] for row in rows} == {"completed"}
    assert all(int(row["rt_ms"]) > 0 for row in rows)  # measured in the browser
    assert Response.objects.filter(trial__participant__study=study).count() == total


def test_adaptive_tag_study_by_keyboard_and_its_export(browser, page, live_server, researcher):
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Sentence tags (e2e)",
        kind="tags",
        items=ItemPlan(),
        tag_mode="adaptive",
        trials_per_session=1,
        judgments_per_item=1,
        consent_md="Describe sentences with tags.",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    # One stimulus's chain is open, and a first participant has tagged it already.
    chain = Item.objects.filter(study=study).order_by("pk").first()
    Item.objects.filter(study=study).exclude(pk=chain.pk).update(completed=True)
    seed = services.participant_start(study=study, external_id="seed")
    seed_trial = services.trial_current(participant=seed)
    assert seed_trial.item_id == chain.pk
    services.response_submit(
        participant=seed,
        answer=Answer(seed_trial.pk, "seed-key", rt_ms=2000, new_tags=["Red Car", "vehicle"]),
    )

    page.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=e2e-2")
    consent_with_keyboard(page)
    expect(page.locator("#trial > p.muted")).to_contain_text("Trial 1 of 1")
    shown = page.locator(".tag-row .tag").all_inner_texts()
    assert sorted(shown) == ["red car", "vehicle"]
    wanted = {"red car": "4", "vehicle": "flag"}  # the order on screen is random
    options = ["1", "2", "3", "4", "5", "flag"]
    first_radio = focused(page)  # autofocus: the first rating of the first tag
    assert (first_radio["type"], first_radio["value"]) == ("radio", "1")
    for row, text in enumerate(shown):
        if row:
            page.keyboard.press("Tab")  # into the next tag's group, on its first option
        assert focused(page)["value"] == "1"
        steps = options.index(wanted[text])
        if steps == 0:
            page.keyboard.press("Space")
        for _ in range(steps):
            page.keyboard.press("ArrowRight")  # moves and checks, within the group
        assert focused(page)["value"] == wanted[text]
    page.keyboard.press("Tab")
    assert focused(page)["id"] == "new-tags"
    page.keyboard.type("  Shiny   PAINT , metallic")
    screenshot(page, "study-tag-trial")

    context, phone = open_on_phone(browser, page.url)
    expect(phone.locator(".tag-row").first).to_be_visible()
    expect(phone.get_by_role("button", name="Next")).to_be_visible()
    screenshot(phone, "study-tag-trial-phone")
    context.close()

    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/done/$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    screenshot(page, "study-tag-done")

    participant = Participant.objects.get(study=study, external_id="e2e-2")
    assert participant.status == "completed"
    trial = participant.trials.get()
    assert trial.item_id == chain.pk and trial.response.rt_ms > 0
    ratings = {r.tag.text: (r.rating, r.flagged) for r in TagRating.objects.filter(trial=trial)}
    assert ratings == {"red car": (4, False), "vehicle": (None, True)}
    added = set(Tag.objects.filter(added_in=trial).values_list("text", flat=True))
    assert added == {"shiny paint", "metallic"}

    rows = researcher_export(browser, live_server, study, "tags")
    assert {row["stimulus"] for row in rows} == {chain.a.name}
    assert [
        (row["tag"], row["status"], row["ratings"], row["mean_rating"], row["flags"])
        for row in rows
    ] == [
        ("metallic", "active", "0", "", "0"),
        ("red car", "active", "1", "4.0", "0"),
        ("shiny paint", "active", "0", "", "0"),
        ("vehicle", "active", "0", "", "1"),
    ]


def test_switching_devices_needs_the_private_link(browser, page, live_server, researcher):
    """A second device with the same recruiter id gets the what-to-do page, not the session;
    the private link from the first device's page continues it there."""
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Sentence pairs (devices)",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=3,
        trials_per_session=3,
        contact="lab@example.org",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    link = f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=e2e-3"
    page.goto(link)
    page.get_by_label(re.compile("agree to take part")).check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/p/[\w-]+/$"))
    wait_for_trial(page, 1, 3)
    page.keyboard.press("5")
    wait_for_trial(page, 2, 3)
    page.get_by_text("Continue later or on another device").click()
    private = page.locator("#resume-link").input_value()
    assert private == page.url

    context, phone = open_on_phone(browser, link)
    try:
        expect(phone.locator("h1")).to_have_text(study.name)
        expect(phone.get_by_role("alert")).to_contain_text("already been started")
        expect(phone.get_by_role("link", name="lab@example.org")).to_have_attribute(
            "href", "mailto:lab@example.org"
        )
        assert phone.locator("#trial").count() == 0
        screenshot(phone, "study-conflict-phone")
        phone.goto(private)
        wait_for_trial(phone, 2, 3)
        phone.keyboard.press("6")
        wait_for_trial(phone, 3, 3)
        phone.goto(link)  # the recruiter's link now continues here too
        wait_for_trial(phone, 3, 3)
        phone.keyboard.press("2")
        phone.wait_for_url(re.compile(r"/done/$"))
        expect(phone.locator("#completion-code")).to_have_text(study.completion_code)
    finally:
        context.close()
    participant = Participant.objects.get(study=study)
    assert participant.status == "completed"
    assert participant.refused_resumes.count() == 1
    assert sorted(Response.objects.values_list("value", flat=True)) == [2, 5, 6]
