"""Video datasets: a zip of label folders of clips, every clip decoded and checked on import
(all or nothing), then embedded frame by frame by image models, with the frame sampling in
the fingerprint and beside every score."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from evaluation import services
from evaluation.imports.stimuli import dataset_import_videos
from evaluation.metrics import knn_entry
from evaluation.models import Dataset, EmbeddingSet, Score, Stimulus
from tests import videos
from tests.evaluation.test_dataset_import import zip_of
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def clips_zip(folder: Path, extra: dict[str, bytes] | None = None) -> io.BytesIO:
    """Three clips per colour (moving left, right, still), in WebM and MP4."""
    members = {}
    for label, colour in COLOURS.items():
        for index, motion in enumerate(("left", "right", "none")):
            suffix = ".webm" if index % 2 else ".mp4"
            path = folder / f"{label}-{index}{suffix}"
            videos.synthetic_clip(path, colour=colour, motion=motion, frames=12)
            members[f"{label}/{index}{suffix}"] = path.read_bytes()
    return zip_of({**members, **(extra or {})})


def test_a_zip_of_clips_becomes_labelled_video_stimuli_with_a_frame_sampling(tmp_path):
    dataset = dataset_import_videos(name="shapes", upload=clips_zip(tmp_path))
    assert (dataset.modality, dataset.stimulus_count) == ("video", 9)
    assert dataset.frame_sampling == {"frames": 8}
    assert dataset.frame_sampling_label == "8 frames spread evenly over each clip"
    assert set(dataset.stimuli.values_list("label", flat=True)) == set(COLOURS)
    assert dataset.targets.filter(kind="labels").exists()
    for stimulus in dataset.stimuli.all():
        assert Path(stimulus.file.path).is_file()


def test_the_frame_sampling_is_chosen_at_import_and_nonsense_is_refused(tmp_path):
    dataset = dataset_import_videos(
        name="by rate", upload=clips_zip(tmp_path), frame_sampling="fps=2,max=16"
    )
    assert dataset.frame_sampling == {"fps": 2.0, "frames": 16}
    with pytest.raises(ValidationError) as caught:
        dataset_import_videos(name="bad", upload=clips_zip(tmp_path), frame_sampling="lots")
    assert "frame_sampling" in caught.value.message_dict
    assert not Dataset.objects.filter(name="bad").exists()


def media_files(settings) -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("member", "build", "message"),
    [
        ("red/broken.mp4", videos.corrupt_mp4, "red/broken.mp4"),
        ("red/empty.mp4", videos.zero_frame_file, "no frame"),
        ("red/tone.mp4", videos.audio_only_file, "no video stream"),
        ("red/long.mkv", videos.long_clip_header, "too long: 4:00:00"),
        ("red/notes.mp4", videos.not_a_video, "red/notes.mp4"),
    ],
)
def test_bad_clips_are_refused_by_name_and_nothing_is_kept(
    member, build, message, tmp_path, settings, isolated_storage
):
    bad = build(tmp_path / Path(member).name)
    upload = clips_zip(tmp_path, {member: bad.read_bytes()})
    with pytest.raises(ValidationError) as caught:
        dataset_import_videos(name="with a bad clip", upload=upload)
    text = " ".join(caught.value.message_dict["file"])
    assert member in text and message in text, text
    assert not Dataset.objects.exists() and not Stimulus.objects.exists()
    assert media_files(settings) == []


def test_a_member_that_is_no_video_by_its_name_is_refused(tmp_path):
    upload = clips_zip(tmp_path, {"red/readme.txt": b"hello"})
    with pytest.raises(ValidationError, match="red/readme.txt.*is not a video"):
        dataset_import_videos(name="texty", upload=upload)


def test_image_models_embed_each_sampled_frame_and_the_sampling_is_in_the_fingerprint(
    tmp_path,
    enqueued,
):
    upload = clips_zip(tmp_path).getvalue()
    eight = dataset_import_videos(name="eight", upload=io.BytesIO(upload))
    four = dataset_import_videos(name="four", upload=io.BytesIO(upload), frame_sampling="frames=4")
    pixels = services.model_register(name="pixels", source="baseline", identifier="pixels-16")
    for dataset in (eight, four):
        run = services.run_create(
            dataset=dataset, models=[pixels], metrics=[knn_entry(k=3, split="loo")]
        )
        run_steps(run)
        run.refresh_from_db()
        assert run.status == "succeeded", run.steps.get().error_message
    # Same clips, other frames: two embedding sets, not one reused.
    assert EmbeddingSet.objects.filter(model=pixels).count() == 2
    for score in Score.objects.all():
        # Colour decides the label and the pixels of every frame: k-NN cannot miss.
        assert score.value == 1.0
        assert score.details["frames"] == score.run.dataset.frame_sampling_label


def test_the_run_form_offers_image_and_video_models_for_a_video_dataset(tmp_path):
    from evaluation.forms import RunForm

    dataset = dataset_import_videos(name="clips", upload=clips_zip(tmp_path))
    pixels = services.model_register(name="pixels", source="baseline", identifier="pixels-16")
    tfidf = services.model_register(name="tfidf", source="baseline", identifier="tfidf")
    offered = set(RunForm(data={"dataset": dataset.pk}).listed_models)  # the models it lists
    assert pixels in offered and tfidf not in offered
    with pytest.raises(ValidationError, match="different modality"):
        services.run_create(dataset=dataset, models=[tfidf], metrics=[knn_entry(k=3, split="loo")])


def test_import_dataset_command_recognises_a_zip_of_clips(tmp_path):
    path = tmp_path / "clips.zip"
    path.write_bytes(clips_zip(tmp_path).getvalue())
    out = io.StringIO()
    call_command(
        "import_dataset", str(path), "--name", "cli clips", "--frames", "fps=4", stdout=out
    )
    dataset = Dataset.objects.get(name="cli clips")
    assert dataset.modality == "video" and dataset.frame_sampling == {"fps": 4.0, "frames": 8}
    assert "Models see 4 frames per second" in out.getvalue()


def test_researchers_get_clips_in_byte_ranges_so_players_can_seek(tmp_path, researcher_client):
    from django.urls import reverse

    dataset = dataset_import_videos(name="ranged", upload=clips_zip(tmp_path))
    stimulus = dataset.stimuli.first()
    url = reverse("evaluation:stimulus_file", args=[stimulus.pk])
    whole = Path(stimulus.file.path).read_bytes()
    response = researcher_client.get(url, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert b"".join(response.streaming_content) == whole[:100]
    assert response["Content-Range"] == f"bytes 0-99/{len(whole)}"


def test_a_transformers_video_model_is_registered_listed_and_run_on_its_own_frames(
    tmp_path,
    enqueued,
):
    from tests.engine.test_video_adapters import save_tiny

    save_tiny("videomae", tmp_path / "videomae")
    dataset = dataset_import_videos(name="clips", upload=clips_zip(tmp_path))
    model = services.model_register(
        name="tiny videomae", source="transformers-video", identifier=str(tmp_path / "videomae")
    )
    services.model_inspect(model_id=model.pk)  # on a sample clip
    model.refresh_from_db()
    assert model.modality == "video" and not model.inspection_error
    assert "encoder.layer.0" in model.layer_names
    run = services.run_create(
        dataset=dataset,
        models=[model],
        metrics=[knn_entry(k=3, split="loo")],
        layers={model.pk: ["last_hidden_state", "encoder.layer.0"]},
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.steps.get().error_message
    for score in Score.objects.filter(run=run):
        # The model sees its own number of frames (4), not the dataset's 8.
        assert score.details["frames"] == "4 frames spread evenly over each clip"
