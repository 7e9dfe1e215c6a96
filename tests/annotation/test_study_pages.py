"""Study pages over HTTP: a participant's whole session without JavaScript, returning with
the same link, what a participant token can and cannot reach, CSRF, the researcher's
dashboard and streamed exports."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation import caches, services
from annotation.models import Participant, Response, Study
from annotation.services import ItemPlan
from evaluation.imports.stimuli import dataset_import_audio
from tests.conftest import make_image_dataset, make_text_dataset
from tests.evaluation.test_audio_datasets import tones_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(researcher) -> Study:
    study = services.study_create(
        dataset=make_text_dataset(),
        name="Sentence similarity",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=3,
        trials_per_session=4,
        consent_md="You may stop **at any time**.<script>alert(1)</script>",
        redirect_url="https://app.prolific.example/submissions/complete",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    return study


def consent(client: Client, study: Study, query: str = "") -> str:
    """Open the study link, agree, and return the participant page's URL."""
    url = study.participant_url() + query
    page = client.get(url)
    assert page.status_code == 200
    response = client.post(url, {"consent": "on"})
    assert response.status_code == 302
    return response["Location"]


def current_trial(client: Client, url: str) -> dict[str, str]:
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    return {
        "trial": re.search(r'name="trial" value="(\d+)"', html).group(1),
        "key": re.search(r'name="key" value="(\w+)"', html).group(1),
    }


def test_consent_is_markdown_without_script(client, study):
    page = client.get(study.participant_url()).content.decode()
    assert "<strong>at any time</strong>" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java&#x09;script:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
    ],
)
@pytest.mark.parametrize("field", ["consent_md", "instructions_md"])
def test_links_in_consent_and_instructions_cannot_run_script(client, study, field, href):
    Study.objects.filter(pk=study.pk).update(**{field: f"[click me]({href}) and [ok](/help/)"})
    page = client.get(study.participant_url()).content.decode()
    assert "click me" in page and 'href="/help/"' in page
    links = re.findall(r"<a\b[^>]*>", page)
    unsafe = [a for a in links if re.search(r"(?i)(java|vb)\s*script|data:", a)]
    assert not unsafe, unsafe


def test_web_and_mail_links_in_consent_are_kept(client, study):
    Study.objects.filter(pk=study.pk).update(
        consent_md="[Privacy](https://example.org/privacy) or [mail us](mailto:lab@example.org)"
    )
    page = client.get(study.participant_url()).content.decode()
    assert re.search(r'<a href="https://example.org/privacy"[^>]*>Privacy</a>', page)
    assert re.search(r'<a href="mailto:lab@example.org"[^>]*>mail us</a>', page)


def test_a_whole_session_without_javascript_ends_with_the_completion_code(client, study):
    url = consent(client, study, "?PROLIFIC_PID=abc123")
    for value in (1, 4, 7, 2):
        fields = current_trial(client, url)
        response = client.post(url, {**fields, "value": value})
        assert response.status_code == 302  # post/redirect/get
    done = client.get(url, follow=True)
    assert study.completion_code in done.content.decode()
    assert "submissions/complete?cc=" in done.content.decode()
    participant = Participant.objects.get()
    assert participant.external_id == "abc123" and participant.status == "completed"
    assert sorted(Response.objects.values_list("value", flat=True)) == [1, 2, 4, 7]


def test_htmx_swaps_the_next_trial_in_place(client, study):
    url = consent(client, study)
    fields = current_trial(client, url)
    response = client.post(url, {**fields, "value": 5}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="trial"') and "<html" not in body
    assert f'name="trial" value="{fields["trial"]}"' not in body  # the next trial


def test_an_htmx_answer_costs_three_statements(client, study):
    """Every answer runs this path, so its round trips to the database are counted: the
    participant with the study and the trial answered, the answer stored with the next trial
    claimed and issued (one statement on PostgreSQL), and the next trial's stimuli (read once
    per process: none the second time)."""
    url = consent(client, study)
    fields = current_trial(client, url)
    caches.DISPLAYED_STIMULI.clear()
    with CaptureQueriesContext(connection) as captured:
        response = client.post(url, {**fields, "value": 5}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    statements = [q["sql"] for q in captured if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 3, "\n".join(statements)
    assert Response.objects.filter(trial_id=fields["trial"]).count() == 1
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200  # the same trial again: its stimuli known
    assert not any("evaluation_stimulus" in q["sql"] for q in captured)


def test_the_same_link_continues_where_the_participant_stopped(client, study):
    url = consent(client, study, "?PROLIFIC_PID=p-77")
    fields = current_trial(client, url)
    client.post(url, {**fields, "value": 3})
    # Same browser: the session remembers, with or without the recruiter's id.
    assert client.get(study.participant_url())["Location"] == url
    assert client.get(study.participant_url() + "?PROLIFIC_PID=p-77")["Location"] == url
    assert "Trial 2 of 4" in client.get(url).content.decode()


def test_a_recruiter_id_alone_does_not_open_someone_elses_session(client, study, researcher):
    """Recruiter ids are not secrets (researchers, platforms and other participants see
    them): a browser without the participant's session gets a page that says what to do and
    whom to contact, never their trials; the researcher sees each refused attempt."""
    Study.objects.filter(pk=study.pk).update(contact="lab@example.org")
    url = consent(client, study, "?PROLIFIC_PID=p-77")
    fields = current_trial(client, url)
    client.post(url, {**fields, "value": 3})
    token = url.strip("/").split("/")[-1]

    intruder = Client()
    page = intruder.get(study.participant_url() + "?PROLIFIC_PID=p-77")
    assert page.status_code == 409
    html = page.content.decode()
    assert token not in html and 'name="trial"' not in html
    assert "already been started" in html and "private link" in html
    assert 'href="mailto:lab@example.org"' in html
    # Posting the consent form with the id changes nothing either.
    posted = intruder.post(study.participant_url(), {"consent": "on", "external_id": "p-77"})
    assert posted.status_code == 409 and token not in posted.content.decode()
    assert Participant.objects.count() == 1
    assert intruder.get(url.replace(token, "guess")).status_code == 404
    # The real participant goes on where they stopped.
    assert "Trial 2 of 4" in client.get(url).content.decode()

    client.force_login(researcher)
    dashboard = client.get(reverse("annotation:study_detail", args=[study.pk])).content.decode()
    refused = re.search(r'<section id="refused-resumes">(.*?)</section>', dashboard, re.S)
    assert refused, "the dashboard does not show refused attempts"
    assert "2 refused attempts" in refused.group(1)
    assert refused.group(1).count("p-77") == 2


def test_the_private_link_continues_on_another_device(client, study):
    """The participant page shows the participant's own link: opened on a second device it
    continues the same session (the documented way to switch devices)."""
    url = consent(client, study, "?PROLIFIC_PID=p-78")
    fields = current_trial(client, url)
    client.post(url, {**fields, "value": 3})
    page = client.get(url).content.decode()
    private = re.search(r'id="resume-link"[^>]*value="([^"]+)"', page)
    assert private, "the participant page does not show the private link"
    assert private.group(1) == f"http://testserver{url}"
    phone = Client()
    resumed = phone.get(private.group(1).removeprefix("http://testserver"))
    assert resumed.status_code == 200 and "Trial 2 of 4" in resumed.content.decode()
    # The study link on the second device then continues too (the link was opened there).
    assert phone.get(study.participant_url() + "?PROLIFIC_PID=p-78")["Location"] == url


def test_a_logged_in_participant_continues_with_their_account(client, study, outsider):
    client.force_login(outsider)
    url = consent(client, study)
    other_browser = Client()
    other_browser.force_login(outsider)
    assert other_browser.get(study.participant_url())["Location"] == url


def test_a_double_click_stores_one_response(client, study):
    url = consent(client, study)
    fields = current_trial(client, url)
    client.post(url, {**fields, "value": 6})
    client.post(url, {**fields, "value": 6})
    assert Response.objects.count() == 1


def test_a_participant_cannot_answer_or_see_another_participants_trial(client, study):
    alice_url = consent(client, study)
    alice_trial = current_trial(client, alice_url)
    bob = Client()
    bob_url = consent(bob, study)
    response = bob.post(bob_url, {**alice_trial, "value": 2})
    assert response.status_code == 403
    alice = Participant.objects.get(token=alice_url.strip("/").split("/")[-1])
    shown = alice.trials.get().shown
    assert bob.get(
        reverse(
            "annotation:participant_stimulus", args=[bob_url.strip("/").split("/")[-1], shown[0]]
        )
    ).status_code in (403, 404)
    assert Response.objects.count() == 0


def test_participants_reach_no_researcher_page(client, study):
    consent(client, study)
    for name, args in [
        ("annotation:study_detail", [study.pk]),
        ("annotation:study_list", []),
        ("annotation:study_export", [study.pk, "responses", "csv"]),
        ("evaluation:run_list", []),
    ]:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_forms_need_a_csrf_token(study):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(study.participant_url(), {"consent": "on"}).status_code == 403
    assert Participant.objects.count() == 0


def test_a_closed_study_takes_no_new_participants(client, study):
    services.study_set_status(study=study, status="closed")
    assert client.get(study.participant_url()).status_code == 403


def test_dashboard_and_streamed_exports_hold_exactly_the_responses(client, researcher, study):
    for _ in range(3):
        participant_client = Client()
        url = consent(participant_client, study)
        for value in (2, 5, 6, 3):
            participant_client.post(url, {**current_trial(participant_client, url), "value": value})
    client.force_login(researcher)
    page = client.get(reverse("annotation:study_detail", args=[study.pk])).content.decode()
    assert "12 regular responses over 28 items" in page
    export = client.get(reverse("annotation:study_export", args=[study.pk, "responses", "csv"]))
    assert export.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert len(rows) == 12 and sorted(float(r["value"]) for r in rows) == sorted([2, 5, 6, 3] * 3)
    as_json = client.get(reverse("annotation:study_export", args=[study.pk, "responses", "json"]))
    assert len(json.loads(b"".join(as_json.streaming_content))) == 12
    aggregate = client.get(reverse("annotation:study_export", args=[study.pk, "aggregate", "csv"]))
    per_item = list(csv.DictReader(io.StringIO(b"".join(aggregate.streaming_content).decode())))
    assert sum(int(row["n"]) for row in per_item) == 12
    response = client.post(reverse("annotation:study_aggregate", args=[study.pk]), follow=True)
    assert "Stored 12 judgments" in response.content.decode()


def test_researcher_creates_a_study_from_the_form(client, researcher):
    dataset = make_text_dataset()
    client.force_login(researcher)
    items = "a,b\nA cat sits on the mat.,A dog runs in the park.\n"
    response = client.post(
        reverse("annotation:study_create"),
        {
            "name": "listed",
            "kind": "pairs",
            "dataset": dataset.pk,
            "item_mode": "list",
            "item_file": io.BytesIO(items.encode()),
            "seed": 0,
            **{f: v for f, v in FORM_DEFAULTS.items()},
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(name="listed")
    assert study.items.count() == 1 and study.status == "draft"


def test_a_study_of_all_pairs_needs_no_seed(client, researcher):
    """The seed only draws a random subset: a blank one must not block the form."""
    dataset = make_text_dataset()
    client.force_login(researcher)
    response = client.post(
        reverse("annotation:study_create"),
        {
            "name": "all pairs",
            "kind": "pairs",
            "dataset": dataset.pk,
            "item_mode": "all",
            "seed": "",
            **FORM_DEFAULTS,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Study.objects.get(name="all pairs").items.count() > 0


FORM_DEFAULTS = {
    "judgments_per_item": 5,
    "trials_per_session": 20,
    "practice_trials": 0,
    "scale_min": 1,
    "scale_max": 7,
    "scale_min_label": "Not at all similar",
    "scale_max_label": "Very similar",
    "tag_mode": "free",
    "flags_to_hide": 2,
    "ratings_to_freeze": 3,
    "freeze_mean": 3.0,
    "frozen_tags_to_complete": 2,
    "max_iterations": 10,
    "arena_max_items": 40,
    "evidence_threshold": 0.5,
    "session_seconds": 1200,
    "min_pair_consistency": -1.0,
    "external_id_param": "PROLIFIC_PID",
    "repeat_trials": 0,
    "catch_trials": 0,
    "min_response_ms": 0,
    "max_catch_failures": 0,
    "exclude_on_failure": "on",
    "max_fast_share": 0.2,
    "max_retest_difference": 2.0,
    "min_retest_agreement": 0.5,
    "trial_timeout_seconds": 600,
    "require_playback": "",  # unticked
    "consent_md": "",
    "instructions_md": "",
    "redirect_url": "",
    "contact": "",
}


@pytest.mark.parametrize("modality", ["images", "audio"])
def test_file_stimuli_are_shown_as_images_or_audio_players(client, researcher, modality):
    if modality == "images":
        dataset = make_image_dataset(name="digits for a study")
    else:
        dataset = dataset_import_audio(name="tones", upload=tones_zip())
    study = services.study_create(
        dataset=dataset, name=f"{modality} study", kind="pairs",
        items=ItemPlan(mode="random", count=4, seed=0), trials_per_session=2,
    )  # fmt: skip
    services.study_set_status(study=study, status="open")
    url = consent(client, study)
    html = client.get(url).content.decode()
    element = "img" if modality == "images" else "audio"
    sources = re.findall(r'<(img|audio)[^>]* src="([^"]+)"', html)
    assert [kind for kind, _ in sources] == [element, element]
    for _, src in sources:  # each served to this participant
        assert client.get(src).status_code == 200, src


def test_a_full_study_says_so_before_consent_and_a_complete_one_is_closed(client, study):
    from annotation.models import Item

    Study.objects.filter(pk=study.pk).update(trials_per_session=28)
    services.study_set_status(study=study, status="open")
    Item.objects.filter(study=study).update(assigned=3)  # every place held by sessions
    page = client.get(study.participant_url())
    html = page.content.decode()
    assert page.status_code == 503 and "full at the moment" in html
    assert 'name="consent"' not in html
    assert client.post(study.participant_url(), {"consent": "on"}).status_code == 503
    assert Participant.objects.count() == 0

    Item.objects.filter(study=study).update(assigned=3, answered=3)  # every item done
    page = client.get(study.participant_url())
    assert page.status_code == 403 and "has all the responses it needs" in page.content.decode()
    study.refresh_from_db()
    assert study.status == "closed" and study.completed_at is not None
