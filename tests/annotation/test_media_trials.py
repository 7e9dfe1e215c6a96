"""Video and audio stimuli on the pages: poster frames (who may fetch them, made once and
kept, a clip that does not decode is a 404 and not an error page), clips served in byte
ranges, the participants' trials for each study kind (muted, looping, inline, preloaded
clips, answers outside the players), the study option require_playback, and the dataset
and compare pages' posters that play on click."""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from PIL import Image

from annotation import services
from annotation.models import Participant, Study
from annotation.services import ItemPlan
from evaluation.imports.stimuli import dataset_import_audio
from evaluation.models import Dataset, Stimulus
from tests.conftest import make_image_dataset, make_text_dataset
from tests.evaluation.test_audio_datasets import tones_zip
from tests.videos import audio_only_file, not_a_video, synthetic_clip, zero_frame_file

pytestmark = pytest.mark.django_db

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


# --- Clips and video datasets, made here (rows written directly, as an import would) -----------
def clip_bytes(
    colour: tuple[int, int, int],
    *,
    frames: int = 16,
    size: tuple[int, int] = (64, 48),
    fps: int = 8,
) -> bytes:
    """A synthetic clip (a square of ``colour`` moving right on black) as WebM bytes: VP9,
    which every Chromium build plays (Debian's plays H.264 too; Playwright's own does not)."""
    with tempfile.TemporaryDirectory() as folder:
        path = synthetic_clip(
            Path(folder) / "clip.webm",
            colour=colour,
            motion="right",
            frames=frames,
            size=size,
            fps=fps,
        )
        return path.read_bytes()


def make_video_dataset(name: str = "clips", clips: dict[str, bytes] | None = None) -> Dataset:
    """A video dataset of label/clip stimuli: by default two clips of each colour."""
    if clips is None:
        clips = {
            f"{label}/{index}.webm": clip_bytes(colour, frames=12 + 4 * index)
            for label, colour in COLOURS.items()
            for index in range(2)
        }
    dataset = Dataset.objects.create(
        name=name, modality="video", frame_sampling={"frames": 8}, content_hash="0" * 64
    )
    for order, (member, data) in enumerate(clips.items()):
        stimulus = Stimulus(
            dataset=dataset,
            order=order,
            name=member,
            label=member.split("/")[0],
            content_hash=hashlib.sha256(data).hexdigest(),
        )
        stimulus.file.save(member.replace("/", "-"), ContentFile(data), save=False)
        stimulus.save()
    dataset.stimulus_count = len(clips)
    dataset.save(update_fields=["stimulus_count"])
    return dataset


def open_study(dataset: Dataset, kind: str = "pairs", **design: Any) -> Study:
    items = ItemPlan() if kind == "tags" else ItemPlan(mode="random", count=4, seed=0)
    study = services.study_create(
        dataset=dataset,
        name=f"{dataset.name} {kind}",
        kind=kind,
        items=items,
        **{"trials_per_session": 2, **design},
    )
    services.study_set_status(study=study, status="open")
    return study


def join(client: Client, study: Study) -> Participant:
    response = client.post(study.participant_url(), {"consent": "on"})
    assert response.status_code == 302
    assert client.get(response["Location"]).status_code == 200  # the first trial is shown
    return Participant.objects.get(token=response["Location"].rstrip("/").split("/")[-1])


def shown_ids(participant: Participant) -> set[int]:
    return {pk for shown in participant.trials.values_list("shown", flat=True) for pk in shown}


def mean_colour(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), float).reshape(-1, 3).mean(0)


@pytest.fixture
def clips() -> Dataset:
    return make_video_dataset()


# --- Posters (researchers) ------------------------------------------------------------------------
def test_a_poster_is_a_frame_of_the_clip_made_once_and_kept(
    researcher_client, clips, settings, monkeypatch
):
    stimulus = clips.stimuli.get(name="blue/1.webm")
    url = reverse("evaluation:stimulus_poster", args=[stimulus.pk])
    response = researcher_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    first = b"".join(response.streaming_content)
    assert Image.open(io.BytesIO(first)).size == (64, 48)  # small clips are not enlarged
    red, green, blue = mean_colour(first)
    assert blue > 2 * max(red, green)  # the clip's own colour (a blue square on black)
    kept = list((Path(settings.MEDIA_ROOT) / "posters").iterdir())
    assert [p.name for p in kept] == [f"{stimulus.pk}-{stimulus.content_hash[:16]}.jpg"]
    assert kept[0].read_bytes() == first  # and no temporary file left beside it

    def no_decoding(*args, **kwargs):
        raise AssertionError("the poster was made again")

    monkeypatch.setattr("evaluation.engine.video.poster_jpeg", no_decoding)
    again = researcher_client.get(url)
    assert again.status_code == 200 and b"".join(again.streaming_content) == first
    assert "private" in again["Cache-Control"]


def test_a_poster_is_still_shown_when_media_root_cannot_keep_it(
    researcher_client, clips, settings, monkeypatch
):
    def disk_full(target, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("evaluation.stimulus_views._write_atomically", disk_full)
    stimulus = clips.stimuli.get(name="blue/1.webm")
    response = researcher_client.get(reverse("evaluation:stimulus_poster", args=[stimulus.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (64, 48)
    assert not (Path(settings.MEDIA_ROOT) / "posters").exists()


def test_posters_are_for_researchers_as_stimulus_files_are(client, outsider, clips, settings):
    stimulus = clips.stimuli.first()
    url = reverse("evaluation:stimulus_poster", args=[stimulus.pk])
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    assert not (Path(settings.MEDIA_ROOT) / "posters").exists()


def test_a_clip_that_does_not_decode_gets_a_404_that_names_it(
    researcher_client, settings, tmp_path
):
    """Imports refuse such files; one that is damaged on disk later must not break a page."""
    bad = {
        "bad/truncated.webm": clip_bytes(COLOURS["green"])[:200],
        "bad/zero-frames.mp4": zero_frame_file(tmp_path / "zero.mp4").read_bytes(),
        "bad/audio-only.mp4": audio_only_file(tmp_path / "audio.mp4").read_bytes(),
        "bad/not-a-video.mp4": not_a_video(tmp_path / "text.mp4").read_bytes(),
    }
    dataset = make_video_dataset(
        "broken clips", {"ok/good.webm": clip_bytes(COLOURS["red"]), **bad}
    )
    for name in bad:
        stimulus = dataset.stimuli.get(name=name)
        response = researcher_client.get(reverse("evaluation:stimulus_poster", args=[stimulus.pk]))
        assert response.status_code == 404, name
        assert name in response.content.decode()
    good = dataset.stimuli.get(name="ok/good.webm")
    assert (
        researcher_client.get(reverse("evaluation:stimulus_poster", args=[good.pk])).status_code
        == 200
    )
    assert len(list((Path(settings.MEDIA_ROOT) / "posters").iterdir())) == 1  # no failure kept


def test_only_video_stimuli_have_posters(researcher_client, digits_zip_small):
    image = make_image_dataset(data=digits_zip_small).stimuli.first()
    text = make_text_dataset().stimuli.first()
    for stimulus in (image, text):
        url = reverse("evaluation:stimulus_poster", args=[stimulus.pk])
        assert researcher_client.get(url).status_code == 404
    assert (
        researcher_client.get(reverse("evaluation:stimulus_poster", args=[10**9])).status_code
        == 404
    )


# --- Posters and clips (participants) -------------------------------------------------------------
def test_participants_fetch_posters_and_clips_of_their_own_trials_only(clips):
    study = open_study(clips)
    alice, bob = Client(), Client()
    alice_p = join(alice, study)
    seen = shown_ids(alice_p)
    assert seen
    for pk in seen:
        poster = alice.get(reverse("annotation:participant_poster", args=[alice_p.token, pk]))
        assert poster.status_code == 200 and poster["Content-Type"] == "image/jpeg"
    unseen = [s.pk for s in clips.stimuli.all() if s.pk not in seen]
    refused = alice.get(reverse("annotation:participant_poster", args=[alice_p.token, unseen[0]]))
    assert refused.status_code == 403

    # A participant of another study over other clips: their token opens none of these.
    other = open_study(make_video_dataset("other clips"))
    bob_p = join(bob, other)
    for pk in seen:
        for route in ("annotation:participant_poster", "annotation:participant_stimulus"):
            assert bob.get(reverse(route, args=[bob_p.token, pk])).status_code == 403, route
    bogus = reverse("annotation:participant_poster", args=["not-a-token", next(iter(seen))])
    assert bob.get(bogus).status_code == 404


def test_clips_are_served_in_byte_ranges(clips):
    study = open_study(clips)
    client = Client()
    participant = join(client, study)
    stimulus = Stimulus.objects.get(pk=next(iter(shown_ids(participant))))
    data = Path(stimulus.file.path).read_bytes()
    url = reverse("annotation:participant_stimulus", args=[participant.token, stimulus.pk])

    whole = client.get(url)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert whole["Content-Type"] == "video/webm"
    assert b"".join(whole.streaming_content) == data

    cases = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, len(data) - 1),
        "bytes=-50": (len(data) - 50, len(data) - 1),
        f"bytes=10-{len(data) + 500}": (10, len(data) - 1),  # clipped to the file
    }
    for header, (first, last) in cases.items():
        part = client.get(url, HTTP_RANGE=header)
        assert part.status_code == 206, header
        assert part["Content-Range"] == f"bytes {first}-{last}/{len(data)}", header
        body = b"".join(part.streaming_content)
        assert body == data[first : last + 1] and int(part["Content-Length"]) == len(body)

    beyond = client.get(url, HTTP_RANGE=f"bytes={len(data)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(data)}"
    for ignored in ("bytes=0-1,5-9", "bytes=9-5", "items=0-5"):  # served whole
        assert client.get(url, HTTP_RANGE=ignored).status_code == 200, ignored


# --- Trials ---------------------------------------------------------------------------------------
def media_tags(html: str, element: str) -> list[str]:
    return re.findall(rf"<{element}\b[^>]*>", html)


def attributes(tag: str) -> set[str]:
    return set(re.findall(r"\s([a-z-]+)(?==|\s|>)", tag))


@pytest.mark.parametrize(
    ("kind", "count"), [("pairs", 2), ("triplets", 3), ("2afc", 3), ("tags", 1)]
)
def test_video_trials_play_muted_looping_inline_and_preloaded(clips, kind, count):
    study = open_study(clips, kind)
    client = Client()
    participant = join(client, study)
    html = client.get(participant.get_absolute_url()).content.decode()
    videos = media_tags(html, "video")
    assert len(videos) == count
    for tag in videos:
        assert {"muted", "loop", "playsinline", "autoplay", "controls"} <= attributes(tag), tag
        assert 'preload="auto"' in tag
        src = re.search(r' src="([^"]+)"', tag).group(1)
        poster = re.search(r' poster="([^"]+)"', tag).group(1)
        assert client.get(src).status_code == 200
        assert client.get(poster)["Content-Type"] == "image/jpeg"
    assert not re.search(
        r"<button[^>]*>(?:(?!</button>).)*<video", html, re.S
    )  # no player in a button
    if kind in ("triplets", "2afc"):
        choices = re.findall(r'<button type="submit" name="chosen" value="(\d+)"', html)
        assert len(choices) == count - (kind == "2afc")
    assert "data-require-playback" not in html and "playback-note" not in html


@pytest.mark.parametrize("kind", ["pairs", "triplets", "2afc"])
def test_audio_trials_preload_and_keep_players_outside_the_answer_buttons(kind):
    dataset = dataset_import_audio(name=f"tones {kind}", upload=tones_zip())
    study = open_study(dataset, kind, require_playback=True)
    client = Client()
    participant = join(client, study)
    html = client.get(participant.get_absolute_url()).content.decode()
    players = media_tags(html, "audio")
    assert len(players) == {"pairs": 2}.get(kind, 3)
    for tag in players:
        assert {"controls", "data-clip"} <= attributes(tag) and 'preload="auto"' in tag, tag
        assert client.get(re.search(r' src="([^"]+)"', tag).group(1)).status_code == 200
    assert not re.search(r"<button[^>]*>(?:(?!</button>).)*<audio", html, re.S)
    assert "data-require-playback" in html and 'id="playback-note"' in html


def test_require_playback_marks_the_trial_and_says_why_the_answers_wait(clips):
    study = open_study(clips, require_playback=True)
    client = Client()
    participant = join(client, study)
    html = client.get(participant.get_absolute_url()).content.decode()
    trial = re.search(r'<div id="trial"[^>]*>', html).group(0)
    assert "data-require-playback" in trial
    note = re.search(r'<p class="playback-note" id="playback-note"[^>]*>([^<]*)</p>', html)
    assert "until each clip has played once to its end" in note.group(1)
    assert " hidden" in note.group(0)  # study.js shows it: without JavaScript nothing waits
    # The server takes an answer as it comes: it cannot know whether the clips were played.
    trial_id = re.search(r'name="trial" value="(\d+)"', html).group(1)
    key = re.search(r'name="key" value="(\w+)"', html).group(1)
    posted = client.post(
        participant.get_absolute_url(), {"trial": trial_id, "key": key, "value": 3}
    )
    assert posted.status_code == 302
    assert participant.trials.filter(response__isnull=False).count() == 1


def test_require_playback_is_for_audio_and_video_studies_only(researcher, clips):
    with pytest.raises(ValidationError, match="Only audio and video stimuli are played"):
        services.study_create(
            dataset=make_text_dataset(), name="texts", kind="pairs", items=ItemPlan(),
            require_playback=True,
        )  # fmt: skip
    study = services.study_create(
        dataset=clips, name="clips", kind="pairs", items=ItemPlan(), require_playback=True
    )
    assert study.require_playback


def test_the_study_form_and_page_offer_and_show_require_playback(client, researcher, clips):
    from tests.annotation.test_study_pages import FORM_DEFAULTS

    client.force_login(researcher)
    form = client.get(reverse("annotation:study_create")).content.decode()
    assert 'name="require_playback"' in form
    fields = {"kind": "pairs", "item_mode": "all", "seed": "", **FORM_DEFAULTS}
    refused = client.post(
        reverse("annotation:study_create"),
        {**fields, "name": "texts", "dataset": make_text_dataset().pk, "require_playback": "on"},
    )
    assert refused.status_code == 200 and "Only audio and video stimuli are played" in (
        refused.content.decode()
    )
    created = client.post(
        reverse("annotation:study_create"),
        {**fields, "name": "played clips", "dataset": clips.pk, "require_playback": "on"},
    )
    assert created.status_code == 302
    study = Study.objects.get(name="played clips")
    assert study.require_playback
    page = client.get(study.get_absolute_url()).content.decode()
    assert 'id="require-playback"' in page


# --- Dashboard pages ------------------------------------------------------------------------------
def test_the_dataset_page_shows_posters_that_link_to_their_clips(researcher_client, clips):
    html = researcher_client.get(clips.get_absolute_url()).content.decode()
    links = re.findall(r'<a class="clip" href="([^"]+)" data-clip[^>]*><img src="([^"]+)"', html)
    assert len(links) == clips.stimuli.count()
    for clip, poster in links:
        assert researcher_client.get(clip).status_code == 200
        assert researcher_client.get(poster)["Content-Type"] == "image/jpeg"
    assert "8 frames spread evenly over each clip" in html


def test_compare_page_stimuli_play_on_click_except_inside_a_link(clips):
    stimulus = clips.stimuli.first()
    poster = reverse("evaluation:stimulus_poster", args=[stimulus.pk])
    playable = render_to_string("evaluation/_stimulus_view.html", {"stimulus": stimulus})
    assert "data-clip" in playable and f'src="{poster}"' in playable
    assert reverse("evaluation:stimulus_file", args=[stimulus.pk]) in playable
    still = render_to_string(
        "evaluation/_stimulus_view.html", {"stimulus": stimulus, "still": True}
    )
    assert "<a " not in still and f'src="{poster}"' in still  # the neighbour list's own link


def test_the_api_study_record_says_whether_playback_is_required(researcher_client, clips):
    study = open_study(clips, require_playback=True)
    record = researcher_client.get(f"/api/studies/{study.pk}/", HTTP_ACCEPT="application/json")
    assert record.status_code == 200 and record.json()["require_playback"] is True


def test_arena_videos_show_posters_that_play_on_demand_and_sounds_a_play_control(clips):
    """Dozens of clips at once: videos wait on their poster (arena.js plays one when pointed
    at or tapped) and load nothing until then; sounds are a ▶ control with a hidden player."""
    sounds = dataset_import_audio(name="tones arena", upload=tones_zip())
    for dataset, kind in ((clips, "video"), (sounds, "audio")):
        study = services.study_create(
            dataset=dataset, name=f"arena {kind}", kind="arrangement", items=ItemPlan(),
            judgments_per_item=1, trials_per_session=1, arena_max_items=3,
        )  # fmt: skip
        services.study_set_status(study=study, status="open")
        client = Client()
        participant = join(client, study)
        html = client.get(participant.get_absolute_url()).content.decode()
        items = re.findall(r'<li class="arena-item[^"]*" data-stimulus="(\d+)"', html)
        assert len(items) == 3
        players = media_tags(html, kind)
        assert len(players) == 3
        for tag in players:
            assert 'preload="none"' in tag and "autoplay" not in attributes(tag)
            src = re.search(r' src="([^"]+)"', tag).group(1)
            assert client.get(src).status_code == 200  # the participant's own stimulus
        if kind == "video":
            for tag in players:
                assert {"muted", "loop", "playsinline", "data-hover-play"} <= attributes(tag)
                poster = re.search(r' poster="([^"]+)"', tag).group(1)
                assert client.get(poster)["Content-Type"] == "image/jpeg"
        else:
            assert html.count('class="arena-play"') == 3
