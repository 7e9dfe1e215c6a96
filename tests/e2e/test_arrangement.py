"""Multi-arrangement in a real browser: a participant drags every item into the circle with
the mouse on a desktop, with real touch on a phone, or places and moves them with the
keyboard, through every trial to the completion code. Each stored position (the database
and the researcher's export) is where the item was dropped on screen, in arena radii.

Video and audio items too: a clip shows its poster, plays while pointed at (or once
tapped) and is still dragged; a sound plays on a click or tap of its item (no move, the item
stays put) or on P, and each item is one Tab stop."""

from __future__ import annotations

import io
import json
import math
import re
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest
from playwright.sync_api import CDPSession, Page, expect

from annotation import exports, services
from annotation.models import Participant, Study
from annotation.services import ItemPlan
from evaluation.imports.stimuli import dataset_import_audio
from evaluation.models import Dataset
from tests.annotation.test_media_trials import COLOURS, clip_bytes, make_video_dataset
from tests.conftest import SENTENCES, make_text_dataset
from tests.e2e.conftest import screenshot
from tests.e2e.test_csp import watch_violations
from tests.e2e.test_study_participant import focused, researcher_export
from tests.evaluation.test_audio_datasets import wav_bytes

pytestmark = pytest.mark.e2e

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 393, "height": 851}  # a Pixel 5's CSS pixels
TOLERANCE = 0.02  # arena radii between where an item was dropped and what is stored
RING = 0.6  # targets lie on this circle (arena radii), one angle per item


@dataclass(frozen=True)
class Drop:
    """An item as the participant left it: its stimulus, position (arena radii) and moves."""

    stimulus: int
    x: float
    y: float
    moves: int


@dataclass(frozen=True)
class Circle:
    """The arena on screen (viewport pixels), to turn radii into pixels and back."""

    cx: float
    cy: float
    radius: float

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + x * self.radius, self.cy + y * self.radius

    def radii(self, left: float, top: float) -> tuple[float, float]:
        return (left - self.cx) / self.radius, (top - self.cy) / self.radius


def make_study(researcher, name: str, rows=None, **design) -> Study:
    study = services.study_create(
        dataset=make_text_dataset(name=f"sentences for {name}", rows=rows),
        name=name,
        kind="arrangement",
        items=ItemPlan(),
        consent_md="Arrange sentences by meaning.",
        created_by=researcher,
        **design,
    )
    services.study_set_status(study=study, status="open")
    return study


def consent(page, live_server, study: Study, external_id: str, tap: bool = False) -> None:
    page.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID={external_id}")
    box = page.get_by_label(re.compile("agree to take part"))
    start = page.get_by_role("button", name="Start")
    if tap:
        box.tap()
        start.tap()
    else:
        box.check()
        start.click()
    page.wait_for_url(re.compile(r"/p/[\w-]+/$"))


def wait_for_arena(page, number: int) -> list[int]:
    """Until trial ``number`` is on screen, settled by htmx and set up by arena.js; the
    stimulus ids of its items in the trial's order."""
    expect(page.locator("#trial > p.muted")).to_contain_text(f"Trial {number} of ")
    expect(page.locator("#trial.htmx-added")).to_have_count(0)
    expect(page.locator("#trial[data-kind=arrangement][data-arena-ready]")).to_have_count(1)
    items = page.locator("li.arena-item")
    indices = items.evaluate_all("els => els.map(e => Number(e.dataset.index))")
    assert indices == list(range(len(indices)))
    return [int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.stimulus)")]


def next_page(page, number: int) -> bool:
    """After Done: True once trial ``number`` replaced the last one in place, False at the
    done page."""
    page.wait_for_function(
        """n => location.pathname.endsWith("/done/") ||
        (document.querySelector("#trial > p.muted") || {textContent: ""})
            .textContent.includes(`Trial ${n} of `)""",
        arg=number,
    )
    if page.url.endswith("/done/"):
        return False
    assert page.evaluate("window.sameDocument === true"), "not swapped in place by htmx"
    return True


def arena_in_view(page) -> Circle:
    """Scroll the circle and tray fully into view (a drag cannot scroll the page) and say
    where the circle is."""
    page.locator(".arena-wrap").evaluate("e => e.scrollIntoView({block: 'end'})")
    wrap = page.locator(".arena-wrap").bounding_box()
    viewport = page.viewport_size
    assert wrap["y"] >= 0 and wrap["y"] + wrap["height"] <= viewport["height"] + 1, (
        f"the arena and its tray ({wrap}) do not fit the screen ({viewport})"
    )
    box = page.locator(".arena").bounding_box()
    assert abs(box["width"] - box["height"]) < 1
    return Circle(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2)


def centre_of(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def ring(stimuli: list[int], turn: float) -> dict[int, tuple[float, float]]:
    """Where a consistent participant puts each stimulus: distinct points on a circle inside
    the arena, the same for a stimulus in every trial (turned by ``turn``, which keeps every
    distance), so later arrangements agree with the first and pass the consistency rule."""
    count = len(stimuli)
    return {
        stimulus: (
            RING * math.cos(turn + 2 * math.pi * k / count),
            RING * math.sin(turn + 2 * math.pi * k / count),
        )
        for k, stimulus in enumerate(sorted(stimuli))
    }


def mouse_drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()


def touch_drag(cdp, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    """A finger drag: Chromium turns these into pointer events with pointerType "touch".
    The events carry the times of an unhurried drag (20 ms a step) that rests at the end
    before the finger lifts: sent as fast as they go, a drag is a flick, and Chromium spends
    the next tap (a Done tap, say) stopping the fling it started."""
    clock = time.time()

    def touch(kind: str, at: tuple[float, float] | None, after: float) -> None:
        points = [point(at)] if at else []
        cdp.send(
            "Input.dispatchTouchEvent",
            {"type": kind, "touchPoints": points, "timestamp": clock + after},
        )

    touch("touchStart", start, 0)
    for step in range(1, steps + 1):
        share = step / steps
        here = (start[0] + (end[0] - start[0]) * share, start[1] + (end[1] - start[1]) * share)
        touch("touchMove", here, 0.02 * step)
    touch("touchMove", end, 0.02 * steps + 0.2)  # resting
    touch("touchEnd", None, 0.02 * steps + 0.25)


def touch_tap(cdp, at: tuple[float, float]) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point(at)]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def point(at: tuple[float, float]) -> dict[str, float]:
    return {"x": at[0], "y": at[1]}


def item_at(page, index: int, circle: Circle) -> tuple[float, float] | None:
    """Where item ``index`` is drawn (arena radii), or None while it sits in the tray."""
    item = page.locator(f"li.arena-item[data-index='{index}']")
    if "placed" not in (item.get_attribute("class") or "").split():
        return None
    return circle.radii(*centre_of(item))


def arrange(page, places: dict[int, tuple[float, float]], drag) -> list[Drop]:
    """Drag every item of the trial on screen from its tray slot to its stimulus's place;
    what each drop should store, worked out from the pixel it was dropped at."""
    circle = arena_in_view(page)
    items = page.locator("li.arena-item")
    stimuli = [int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.stimulus)")]
    done = page.locator(".arena-done")
    drops = []
    for index, stimulus in enumerate(stimuli):
        expect(done).to_be_disabled()
        item = items.nth(index)
        start = centre_of(item)
        end = circle.pixel(*places[stimulus])
        drag(start, end)
        expected = circle.radii(*end)  # the grab point was the item's centre
        drawn = item_at(page, index, circle)
        assert drawn is not None, f"item {index} dropped at {end} is not in the circle"
        assert math.dist(drawn, expected) < TOLERANCE
        drops.append(Drop(stimulus, *expected, moves=1))
    expect(page.locator(".arena-status")).to_contain_text(f"{len(stimuli)} of {len(stimuli)}")
    expect(done).to_be_enabled()
    return drops


def drag_while_scrolling(page, drop: Drop, index: int, place: tuple[float, float]) -> Drop:
    """Drag a placed item again and turn the mouse wheel halfway: the page scrolls under the
    held item, and the drop still lands where the pointer lets go."""
    circle = arena_in_view(page)
    item = page.locator(f"li.arena-item[data-index='{index}']")
    start = centre_of(item)
    end = circle.pixel(*place)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=6)
    before = page.evaluate("window.scrollY")
    page.mouse.wheel(0, 100)
    page.wait_for_function("y => window.scrollY > y + 50", arg=before)
    box = page.locator(".arena").bounding_box()
    moved = Circle(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2)
    assert moved.cy < circle.cy - 50
    end = moved.pixel(*place)
    page.mouse.move(*end, steps=6)
    page.mouse.up()
    expected = moved.radii(*end)
    drawn = item_at(page, index, moved)
    assert drawn is not None and math.dist(drawn, expected) < TOLERANCE, (drawn, expected)
    return Drop(drop.stimulus, *expected, moves=drop.moves + 1)


def texts_fit(page) -> None:
    """Every sentence can be read in full: its text fits its item's box."""
    clipped = page.locator("li.arena-item.text").evaluate_all(
        """els => els.filter(e => e.scrollHeight > e.clientHeight + 1 ||
                                  e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)"""
    )
    assert not clipped, f"cut off in their boxes: {clipped}"


def drop_outside_goes_back(page) -> None:
    """Every item starts in the tray; the first, dropped outside the circle, goes back to
    its slot (a move made all the same)."""
    circle = arena_in_view(page)
    count = page.locator("li.arena-item").count()
    assert all(item_at(page, index, circle) is None for index in range(count))
    first = page.locator("li.arena-item").first
    slot = centre_of(first)
    mouse_drag(page, slot, (circle.cx + 1.3 * circle.radius, circle.cy))
    assert item_at(page, 0, circle) is None
    assert math.dist(centre_of(first), slot) < 1
    expect(page.locator(".arena-status")).to_contain_text(f"0 of {count}")


def assert_stored(study: Study, external_id: str, arranged: list[list[Drop]], rows) -> None:
    """The session's responses hold every drop, aligned with the stimuli each trial showed,
    and so do the export's rows (one per item, by trial position and index)."""
    participant = Participant.objects.get(study=study, external_id=external_id)
    assert participant.status == "completed", participant.flags
    trials = list(participant.trials.select_related("response").order_by("position"))
    assert len(trials) == len(arranged)
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    exported = {(int(row["position"]), int(row["index"])): row for row in rows}
    assert len(exported) == len(rows) == sum(len(drops) for drops in arranged)
    for trial, drops in zip(trials, arranged, strict=True):
        assert list(trial.shown) == [drop.stimulus for drop in drops]
        stored = trial.response.arrangement
        assert stored is not None and len(stored) == len(drops)
        for index, ((x, y, moves), drop) in enumerate(zip(stored, drops, strict=True)):
            assert math.dist((x, y), (drop.x, drop.y)) < TOLERANCE, (trial.position, index)
            assert moves == drop.moves >= 1
            row = exported[(trial.position, index)]
            assert row["stimulus"] == names[drop.stimulus]
            assert math.dist((float(row["x"]), float(row["y"])), (drop.x, drop.y)) < TOLERANCE
            assert int(row["moves"]) == drop.moves
            assert row["external_id"] == external_id


def test_desktop_participant_arranges_every_trial_with_the_mouse(
    browser, page, live_server, researcher
):
    study = make_study(
        researcher,
        "Arrangement (desktop)",
        arena_max_items=6,
        trials_per_session=3,
        evidence_threshold=50.0,  # never enough: every trial runs, later ones on subsets
    )
    assert page.viewport_size == DESKTOP
    consent(page, live_server, study, "e2e-desk")
    page.evaluate("window.sameDocument = true")  # gone if a trial loaded as a new page
    arranged: list[list[Drop]] = []
    number = 1
    while True:
        stimuli = wait_for_arena(page, number)
        assert len(stimuli) == (6 if number == 1 else 3)
        if number == 1:
            places = ring(stimuli, turn=0.4)
            screenshot(page, "arrangement-desktop-start")
            texts_fit(page)
            drop_outside_goes_back(page)
        drops = arrange(page, places, drag=lambda a, b: mouse_drag(page, a, b))
        if number == 1:
            drops[0] = Drop(drops[0].stimulus, drops[0].x, drops[0].y, moves=2)
            # Moved to a new place, kept there in later trials (or they would disagree).
            places[drops[1].stimulus] = (0.1, -0.2)
            drops[1] = drag_while_scrolling(page, drops[1], 1, places[drops[1].stimulus])
            screenshot(page, "arrangement-desktop-arranged")
        arranged.append(drops)
        page.locator(".arena-done").click()
        number += 1
        if not next_page(page, number):
            break
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    screenshot(page, "arrangement-desktop-done")
    assert len(arranged) == 3
    rows = researcher_export(browser, live_server, study, "arrangements")
    assert_stored(study, "e2e-desk", arranged, rows)


@contextmanager
def phone_with_touch(browser) -> Iterator[tuple[Page, CDPSession]]:
    """A page on a phone-size, touch screen, and its CDP session (for real touch drags)."""
    context = browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2.75
    )
    try:
        phone = context.new_page()
        phone.set_default_timeout(20_000)
        yield phone, context.new_cdp_session(phone)
    finally:
        context.close()


def test_phone_participant_arranges_with_touch(browser, live_server, researcher):
    study = make_study(
        researcher,
        "Arrangement (phone)",
        arena_max_items=5,
        trials_per_session=2,
        evidence_threshold=50.0,
    )
    with phone_with_touch(browser) as (phone, cdp):
        consent(phone, live_server, study, "e2e-phone", tap=True)
        phone.evaluate("window.sameDocument = true")
        arranged: list[list[Drop]] = []
        number = 1
        while True:
            stimuli = wait_for_arena(phone, number)
            circle = arena_in_view(phone)
            assert 2 * circle.radius <= PHONE["width"], "the arena is wider than the phone"
            if number == 1:
                screenshot(phone, "arrangement-phone-start")
                places = ring(stimuli, turn=0.3)
                places[min(stimuli)] = (0.97, 0.0)  # on the rim, at the phone's right edge
            texts_fit(phone)
            drops = arrange(phone, places, drag=lambda a, b: touch_drag(cdp, a, b))
            assert len(drops) == len(stimuli)
            scrolled, width = phone.evaluate(
                "[window.scrollX, document.documentElement.scrollWidth]"
            )
            assert scrolled == 0 and width <= PHONE["width"], "the page is wider than the phone"
            if number == 1:
                screenshot(phone, "arrangement-phone-arranged")
            arranged.append(drops)
            done = phone.locator(".arena-done")
            done.scroll_into_view_if_needed()
            touch_tap(cdp, centre_of(done))
            number += 1
            if not next_page(phone, number):
                break
        expect(phone.locator("#completion-code")).to_have_text(study.completion_code)
    assert len(arranged) == 2
    assert_stored(study, "e2e-phone", arranged, list(exports.arrangement_rows(study)))


def test_keyboard_places_and_moves_items(page, live_server, researcher):
    study = make_study(
        researcher,
        "Arrangement (keyboard)",
        rows=SENTENCES[:4],
        arena_max_items=4,
        trials_per_session=1,
    )
    consent(page, live_server, study, "e2e-keys")
    stimuli = wait_for_arena(page, 1)
    assert len(stimuli) == 4
    # Tab from the top of the page reaches the first item before any other in the arena.
    for _ in range(20):
        if focused(page)["tag"] == "li":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    # Per item: the keys, then where it should be (radii) and how many moves that made.
    plan = [
        (["Enter"] + ["Shift+ArrowLeft"] * 5, (-0.5, 0.0), 6),
        (["Enter"] + ["Shift+ArrowRight"] * 5, (0.5, 0.0), 6),
        (["Enter"] + ["Shift+ArrowUp"] * 4 + ["ArrowRight"] * 3, (0.06, -0.4), 8),
        (["ArrowDown"] + ["Shift+ArrowDown"] * 9, (0.0, 0.9), 10),  # an arrow places it too
    ]
    circle = arena_in_view(page)
    done = page.locator(".arena-done")
    drops = []
    for index, (keys, (x, y), moves) in enumerate(plan):
        if index:
            page.keyboard.press("Tab")  # on to the next item
        assert page.evaluate("document.activeElement.dataset.index") == str(index)
        expect(done).to_be_disabled()
        for key in keys:
            page.keyboard.press(key)
        drawn = item_at(page, index, circle)
        assert drawn is not None and math.dist(drawn, (x, y)) < 0.01, (index, drawn)
        drops.append(Drop(stimuli[index], x, y, moves))
    expect(done).to_be_enabled()
    # Against the rim the item stops: it never leaves the circle.
    for _ in range(3):
        page.keyboard.press("Shift+ArrowDown")
    drawn = item_at(page, 3, circle)
    assert drawn is not None and math.dist(drawn, (0.0, 1.0)) < 0.01
    # 0.9 is 0.8999... after nine steps: the first press stops just short of the rim, the
    # second reaches it, the third moves nothing and is not counted.
    drops[3] = Drop(stimuli[3], 0.0, 1.0, 12)
    screenshot(page, "arrangement-keyboard-arranged")
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Done"
    with page.expect_request(lambda request: request.method == "POST") as posted:
        page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/done/$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    # The page posted [[stimulus id, x, y, moves], ...] in the trial's order.
    sent = json.loads(parse_qs(posted.value.post_data)["arrangement"][0])
    assert [entry[0] for entry in sent] == stimuli
    assert all(
        math.dist(entry[1:3], (d.x, d.y)) < 1e-6 for entry, d in zip(sent, drops, strict=True)
    )
    participant = Participant.objects.get(study=study, external_id="e2e-keys")
    stored = participant.trials.get().response.arrangement
    for (x, y, moves), drop in zip(stored, drops, strict=True):
        assert math.dist((x, y), (drop.x, drop.y)) < 1e-6
        assert x * x + y * y <= 1 + 1e-9
        assert moves == drop.moves  # presses against the rim moved nothing: not counted


# --- Video and audio items ------------------------------------------------------------------------
MEDIA_ITEMS = 4


def media_study(researcher, dataset: Dataset, name: str) -> Study:
    """One trial of every stimulus of ``dataset`` (four) in the arena."""
    study = services.study_create(
        dataset=dataset,
        name=name,
        kind="arrangement",
        items=ItemPlan(),
        arena_max_items=MEDIA_ITEMS,
        trials_per_session=1,
        consent_md="Arrange the clips by how alike they are.",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    return study


def clip_dataset(name: str) -> Dataset:
    """Four looping 3 s clips (24 frames at 8 fps) of coloured squares."""
    colours = [*COLOURS.items(), ("red", COLOURS["red"])]
    return make_video_dataset(
        name,
        {
            f"{label}/{index}.webm": clip_bytes(colour, frames=24)
            for index, (label, colour) in enumerate(colours)
        },
    )


def sound_dataset(name: str) -> Dataset:
    """Four 4 s tones, low and high: long enough to be still playing when checked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, freq in enumerate((220, 233, 1760, 1865)):
            label = "low" if freq < 1000 else "high"
            archive.writestr(f"{label}/{index}.wav", wav_bytes(freq, seconds=4.0))
    buffer.seek(0)
    return dataset_import_audio(name=name, upload=buffer)


def paused(locator) -> bool:
    return bool(locator.evaluate("clip => clip.paused"))


def playing(page, locator) -> None:
    """Until the clip or sound really plays: not paused and past its first tenth of a second."""
    page.wait_for_function(
        "clip => !clip.paused && clip.currentTime > 0.1", arg=locator.element_handle()
    )


def test_desktop_video_items_show_posters_play_while_pointed_at_and_drag(
    page, live_server, researcher
):
    study = media_study(researcher, clip_dataset("clips to arrange"), "Arrange clips (desktop)")
    violations = watch_violations(page)
    consent(page, live_server, study, "e2e-clips")
    stimuli = wait_for_arena(page, 1)
    assert len(stimuli) == MEDIA_ITEMS
    expect(page.locator(".hint")).to_contain_text("P plays or pauses its clip")
    videos = page.locator("li.arena-item video")
    expect(videos).to_have_count(MEDIA_ITEMS)
    state = videos.evaluate_all(
        "vs => vs.map(v => ({paused: v.paused, ready: v.readyState, poster: v.poster}))"
    )
    for clip in state:  # the poster until pointed at: nothing of the clip loaded yet
        assert clip["paused"] and clip["ready"] == 0, clip
        poster = page.request.get(clip["poster"])
        assert poster.ok and poster.headers["content-type"] == "image/jpeg"
    circle = arena_in_view(page)
    places = ring(stimuli, turn=0.2)
    drops = []
    for index, stimulus in enumerate(stimuli):
        item = page.locator(f"li.arena-item[data-index='{index}']")
        video = item.locator("video")
        start = centre_of(item)
        page.mouse.move(*start)
        playing(page, video)  # pointed at: it plays
        # Dragged while it plays, into the circle.
        end = circle.pixel(*places[stimulus])
        page.mouse.down()
        page.mouse.move(*end, steps=12)
        assert not paused(video)
        page.mouse.up()
        expected = circle.radii(*end)
        drawn = item_at(page, index, circle)
        assert drawn is not None and math.dist(drawn, expected) < TOLERANCE, (drawn, expected)
        assert not paused(video)  # still under the pointer
        page.mouse.move(5, 5)  # away from every item: it stops
        expect(item.locator("video")).to_have_js_property("paused", True)
        drops.append(Drop(stimulus, *expected, moves=1))
    expect(page.locator(".arena-status")).to_contain_text(f"{MEDIA_ITEMS} of {MEDIA_ITEMS}")
    page.wait_for_load_state("networkidle")
    screenshot(page, "arrangement-media")
    done = page.locator(".arena-done")
    expect(done).to_be_enabled()
    done.click()
    page.wait_for_url(re.compile(r"/done/$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    assert_stored(study, "e2e-clips", [drops], list(exports.arrangement_rows(study)))
    assert not violations, "\n".join(violations)


def test_desktop_sound_items_play_on_a_click_that_moves_nothing(page, live_server, researcher):
    study = media_study(researcher, sound_dataset("tones to arrange"), "Arrange sounds (desktop)")
    violations = watch_violations(page)
    consent(page, live_server, study, "e2e-sounds")
    stimuli = wait_for_arena(page, 1)
    assert len(stimuli) == MEDIA_ITEMS
    expect(page.locator("li.arena-item audio")).to_have_count(MEDIA_ITEMS)
    circle = arena_in_view(page)
    first = page.locator("li.arena-item[data-index='0']")
    sound, control = first.locator("audio"), first.locator(".arena-play")
    slot = centre_of(first)
    # A click on the item in the tray plays its sound (the control shows ❚❚), and a second
    # click stops it: neither moves it.
    page.mouse.click(*slot)
    playing(page, sound)
    expect(control).to_have_text("\u275a\u275a")
    page.mouse.click(*slot)
    expect(first.locator("audio")).to_have_js_property("paused", True)
    expect(control).to_have_text("\u25b6")
    assert item_at(page, 0, circle) is None and math.dist(centre_of(first), slot) < 1
    expect(page.locator(".arena-status")).to_contain_text(f"0 of {MEDIA_ITEMS}")
    drops = arrange(page, ring(stimuli, turn=0.5), drag=lambda a, b: mouse_drag(page, a, b))
    # A click on a placed item plays it where it is.
    placed = item_at(page, 0, circle)
    page.mouse.click(*centre_of(first))
    playing(page, sound)
    assert item_at(page, 0, circle) == placed
    page.locator(".arena-done").click()
    page.wait_for_url(re.compile(r"/done/$"))
    # The clicks were no moves: each item stored with the one drag that placed it.
    assert_stored(study, "e2e-sounds", [drops], list(exports.arrangement_rows(study)))
    assert not violations, "\n".join(violations)


def test_keyboard_sound_items_are_one_tab_stop_each_and_p_plays_them(page, live_server, researcher):
    study = media_study(researcher, sound_dataset("tones by keyboard"), "Arrange sounds (keys)")
    consent(page, live_server, study, "e2e-sound-keys")
    stimuli = wait_for_arena(page, 1)
    expect(page.locator(".hint")).to_contain_text("P plays or pauses its sound")
    for _ in range(20):
        if focused(page)["tag"] == "li":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    circle = arena_in_view(page)
    sounds = page.locator("li.arena-item audio")
    # P plays the focused item's sound in the tray and pauses it again: no move, not placed.
    page.keyboard.press("p")
    playing(page, sounds.nth(0))
    page.keyboard.press("p")
    expect(sounds.nth(0)).to_have_js_property("paused", True)
    assert item_at(page, 0, circle) is None
    expect(page.locator(".arena-status")).to_contain_text(f"0 of {MEDIA_ITEMS}")
    done = page.locator(".arena-done")
    targets = [(-0.5, 0.0), (0.5, 0.0), (0.0, -0.5), (0.0, 0.5)]
    keys = {(-0.5, 0.0): "ArrowLeft", (0.5, 0.0): "ArrowRight"}
    keys.update({(0.0, -0.5): "ArrowUp", (0.0, 0.5): "ArrowDown"})
    drops = []
    for index, target in enumerate(targets):
        if index:
            page.keyboard.press("Tab")  # one Tab on to the next item, never its ▶
        assert page.evaluate("document.activeElement.dataset.index") == str(index)
        expect(done).to_be_disabled()
        page.keyboard.press("Enter")
        for _ in range(5):
            page.keyboard.press(f"Shift+{keys[target]}")
        page.keyboard.press("P")  # a placed item plays too, where it is
        playing(page, sounds.nth(index))
        drawn = item_at(page, index, circle)
        assert drawn is not None and math.dist(drawn, target) < 0.01, (index, drawn)
        drops.append(Drop(stimuli[index], *target, moves=6))
    page.keyboard.press("Tab")
    assert focused(page)["text"] == "Done"
    page.keyboard.press("Shift+Tab")  # and back: the last item, not its ▶
    assert page.evaluate("document.activeElement.dataset.index") == str(MEDIA_ITEMS - 1)
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/done/$"))
    assert_stored(study, "e2e-sound-keys", [drops], list(exports.arrangement_rows(study)))


def test_phone_video_item_plays_on_a_tap_and_drags_with_a_finger(browser, live_server, researcher):
    study = media_study(researcher, clip_dataset("clips on a phone"), "Arrange clips (phone)")
    with phone_with_touch(browser) as (phone, cdp):
        consent(phone, live_server, study, "e2e-clips-phone", tap=True)
        stimuli = wait_for_arena(phone, 1)
        circle = arena_in_view(phone)
        first = phone.locator("li.arena-item[data-index='0']")
        video = first.locator("video")
        slot = centre_of(first)
        assert paused(video)
        touch_tap(cdp, slot)  # a tap plays it, and leaves it in the tray
        playing(phone, video)
        assert item_at(phone, 0, circle) is None and math.dist(centre_of(first), slot) < 1
        drops = arrange(phone, ring(stimuli, turn=0.3), drag=lambda a, b: touch_drag(cdp, a, b))
        assert not paused(video)  # dragged while it played, and it plays on
        done = phone.locator(".arena-done")
        done.scroll_into_view_if_needed()
        touch_tap(cdp, centre_of(done))
        phone.wait_for_url(re.compile(r"/done/$"))
    assert_stored(study, "e2e-clips-phone", [drops], list(exports.arrangement_rows(study)))
