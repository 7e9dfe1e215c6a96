"""The dataset import form decides what a file is (a CSV is texts, a zip is media, by the files
in it) and refuses a choice that disagrees, naming both; the register form checks a model
identifier as far as it can without the network, and says what is left to the worker."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from huggingface_hub import constants

from evaluation.models import Dataset, PretrainedModel
from tests.conftest import SENTENCES, texts_csv
from tests.evaluation.test_audio_datasets import tones_zip
from tests.evaluation.test_dataset_import import png_bytes, zip_of

pytestmark = pytest.mark.django_db


def import_dataset(client, name: str, upload: SimpleUploadedFile, modality: str = ""):
    return client.post(
        reverse("evaluation:dataset_create"),
        {"name": name, "modality": modality, "file": upload, "text_column": "text"},
    )


# --- Datasets ---------------------------------------------------------------------------------
def test_a_csv_is_imported_as_texts_without_choosing(researcher_client, isolated_storage):
    upload = SimpleUploadedFile("sentences.csv", texts_csv(SENTENCES).encode())
    response = import_dataset(researcher_client, "sentences from a csv", upload)
    assert response.status_code == 302, response.content.decode()[:3000]
    dataset = Dataset.objects.get(name="sentences from a csv")
    assert (dataset.modality, dataset.stimulus_count) == ("text", len(SENTENCES))


def test_a_zip_of_images_is_imported_as_images(researcher_client, isolated_storage):
    members = {f"{label}/{i}.png": png_bytes() for label in ("red", "blue") for i in range(3)}
    upload = SimpleUploadedFile("colours.zip", zip_of(members).getvalue())
    response = import_dataset(researcher_client, "colours", upload)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Dataset.objects.get(name="colours").modality == "image"


def test_a_zip_of_sounds_is_imported_as_audio(researcher_client, isolated_storage):
    upload = SimpleUploadedFile("tones.zip", tones_zip().getvalue())
    response = import_dataset(researcher_client, "tones", upload)
    assert response.status_code == 302, response.content.decode()[:3000]
    dataset = Dataset.objects.get(name="tones")
    assert (dataset.modality, dataset.stimulus_count) == ("audio", 12)


def test_a_choice_that_disagrees_with_the_file_names_both(researcher_client, isolated_storage):
    upload = SimpleUploadedFile("sentences.csv", texts_csv(SENTENCES).encode())
    response = import_dataset(researcher_client, "wrong kind", upload, modality="image")
    assert response.status_code == 200
    assert response.context["form"].errors["modality"] == [
        "The file sentences.csv is a .csv file, which imports as texts, but images was chosen. "
        "Choose texts (or 'Decide from the file'), or upload a zip of image folders."
    ]
    assert not Dataset.objects.filter(name="wrong kind").exists()


def test_a_zip_of_two_kinds_of_media_is_refused(researcher_client, isolated_storage):
    members = {"a/1.png": png_bytes(), "a/2.png": png_bytes(), "b/1.wav": b"RIFF"}
    upload = SimpleUploadedFile("mixed.zip", zip_of(members).getvalue())
    response = import_dataset(researcher_client, "mixed", upload)
    assert response.context["form"].errors["file"] == [
        "The zip mixed.zip holds 2 image files and 1 audio file: a dataset is one kind of "
        "media (images, audio or video), in folders named by label."
    ]


def test_system_files_of_a_zip_do_not_count_as_media(researcher_client, isolated_storage):
    """The form leaves out what the importer leaves out (reading.is_ignorable): a zip made on
    a Mac, with AppleDouble copies of other media, is still a zip of images."""
    members = {f"red/{i}.png": png_bytes() for i in range(3)}
    members |= {"__MACOSX/red/._0.wav": b"x", "red/.hidden.mp4": b"x"}
    upload = SimpleUploadedFile("mac.zip", zip_of(members).getvalue())
    response = import_dataset(researcher_client, "mac images", upload)
    assert response.status_code == 302, response.context["form"].errors
    assert Dataset.objects.get(name="mac images").modality == "image"


def test_a_file_the_name_says_nothing_about_needs_a_choice(researcher_client, isolated_storage):
    data = texts_csv(SENTENCES).encode()
    response = import_dataset(researcher_client, "dat", SimpleUploadedFile("s.dat", data))
    assert "s.dat is neither a CSV" in response.context["form"].errors["modality"][0]
    chosen = import_dataset(researcher_client, "dat", SimpleUploadedFile("s.dat", data), "text")
    assert chosen.status_code == 302
    assert Dataset.objects.get(name="dat").modality == "text"


def test_the_form_offers_to_decide_from_the_file(researcher_client):
    html = researcher_client.get(reverse("evaluation:dataset_create")).content.decode()
    # Preselected and not required; images are a choice, not the default.
    assert '<input type="radio" name="modality" value="" id="id_modality_0" checked>' in html
    assert '<input type="radio" name="modality" value="image" id="id_modality_1">' in html
    assert "Decide from the file" in html


# --- Models -----------------------------------------------------------------------------------
def register(client, identifier: str, source: str, **extra):
    return client.post(
        reverse("evaluation:model_create"),
        {
            "name": f"model {identifier}",
            "source": source,
            "identifier": identifier,
            "weights": "pretrained" if source != "timm" else "untrained",
            **extra,
        },
    )


def test_a_timm_typo_gets_the_closest_names(researcher_client):
    response = register(researcher_client, "resnet-18", "timm")
    assert response.status_code == 200
    [error] = response.context["form"].errors["identifier"]
    assert error.startswith("timm has no model called 'resnet-18'. Did you mean: resnet18")
    assert not PretrainedModel.objects.exists()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A model cache holding one sentence-transformers model (folders only)."""
    (tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots").mkdir(parents=True)
    (tmp_path / "datasets--someone--data").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_an_uncached_hub_id_offline_is_left_to_the_worker_and_said(researcher_client, hub_cache):
    assert constants.HF_HUB_OFFLINE  # as in the tests' environment: no network here
    page = researcher_client.get(reverse("evaluation:model_create")).content.decode()
    assert "This server is offline (HF_HUB_OFFLINE): a hub id is checked now against" in page
    response = register(researcher_client, "some-lab/sentence-model", "sentence-transformers")
    assert response.status_code == 302, response.content.decode()[:3000]
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert (
        "some-lab/sentence-model is not in this server's model cache and the server is "
        "offline (HF_HUB_OFFLINE): the id will be checked when a worker loads it." in notes
    )


def test_a_hub_id_close_to_a_cached_one_is_a_likely_typo(researcher_client, hub_cache):
    response = register(
        researcher_client, "sentence-transformers/all-MiniLN-L6-v2", "sentence-transformers"
    )
    assert response.status_code == 200
    [error] = response.context["form"].errors["identifier"]
    assert error == (
        "'sentence-transformers/all-MiniLN-L6-v2' is not in this server's model cache, but "
        "'sentence-transformers/all-MiniLM-L6-v2' is: a typo? If you mean "
        "'sentence-transformers/all-MiniLN-L6-v2' as typed, tick 'Register the id as typed'."
    )
    as_typed = register(
        researcher_client,
        "sentence-transformers/all-MiniLN-L6-v2",
        "sentence-transformers",
        identifier_as_typed="on",
    )
    assert as_typed.status_code == 302
    assert PretrainedModel.objects.get().identifier == "sentence-transformers/all-MiniLN-L6-v2"


def test_a_short_name_with_two_letters_swapped_gets_the_short_cached_name(
    researcher_client, hub_cache
):
    response = register(researcher_client, "all-MinilM-L6-v2", "sentence-transformers")
    [error] = response.context["form"].errors["identifier"]
    assert error.startswith(
        "'all-MinilM-L6-v2' is not in this server's model cache, but 'all-MiniLM-L6-v2' is"
    )


@pytest.mark.parametrize(
    ("identifier", "source"),
    [
        ("sentence-transformers/all-mpnet-base-v2", "sentence-transformers"),
        ("sentence-transformers/all-MiniLM-L12-v2", "sentence-transformers"),
        ("sentence-transformers/all-MiniLM-L6-v3", "sentence-transformers"),  # a digit
        ("all-MiniLM-L12-v2", "sentence-transformers"),
        ("bert-base-cased", "transformers-text"),
        ("bert-large-uncased", "transformers-text"),
        ("google-bert/bert-base-uncased", "transformers-text"),  # another organisation
        ("Helsinki-NLP/opus-mt-en-fr", "transformers-text"),  # a word swapped, not misspelt
    ],
)
def test_other_models_of_a_cached_ones_family_are_not_typos(
    researcher_client, hub_cache, identifier, source
):
    """Ids one or two letters from a cached one that name another model (a digit, a size
    or casing word, another organisation, another language) register, with the note that
    the worker checks them."""
    for cached in ("bert-base-uncased", "Helsinki-NLP--opus-mt-en-de"):
        (hub_cache / f"models--{cached}").mkdir()
    response = register(researcher_client, identifier, source)
    assert response.status_code == 302, response.context["form"].errors
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"{identifier} is not in this server's model cache and the server is offline" in (
        " ".join(notes)
    )


def test_a_misspelt_size_or_casing_word_is_still_a_typo(researcher_client, hub_cache):
    (hub_cache / "models--bert-base-uncased").mkdir()
    for identifier in ("bert-base-uncsaed", "bert-bsae-uncased"):
        response = register(researcher_client, identifier, "transformers-text")
        [error] = response.context["form"].errors["identifier"]
        assert "but 'bert-base-uncased' is: a typo?" in error


def test_a_cached_hub_id_and_its_short_name_pass_without_a_note(researcher_client, hub_cache):
    for identifier in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        response = register(researcher_client, identifier, "sentence-transformers")
        assert response.status_code == 302, response.content.decode()[:3000]
        notes = [str(m) for m in get_messages(response.wsgi_request)]
        assert not [note for note in notes if "checked when a worker" in note]
