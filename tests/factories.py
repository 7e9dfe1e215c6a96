"""Rows for tests that need them as they are, not as the services would make them.

factory_boy factories: each builds a valid row with sensible defaults (unique names from a
sequence, a parent made on the fly where none is given), so a test spells out only the
fields it is about. Data a test relies on being realistic (datasets with stimuli and their
label target, registered models, runs with steps, studies with items) still comes from the
services, through the helpers in tests/conftest.py and tests/api/conftest.py.
"""

from __future__ import annotations

from datetime import timedelta

import factory
from django.conf import settings
from django.utils import timezone
from factory.django import DjangoModelFactory, Password

from annotation.models import Participant, Study, Trial, TrialRole
from evaluation.models import Dataset, PretrainedModel, Run, RunStep, Score, Target


# --- People --------------------------------------------------------------------------------------
class UserFactory(DjangoModelFactory):
    """An account that is not a researcher (a participant who logs in, say)."""

    class Meta:
        model = settings.AUTH_USER_MODEL

    username = factory.Sequence(lambda n: f"user-{n}")
    password = Password("user-pass-123")  # hashed, as create_user would: log in with it


class ResearcherFactory(UserFactory):
    """A researcher: an active staff account."""

    is_staff = True


class AdminFactory(ResearcherFactory):
    is_superuser = True


# --- Catalogue -----------------------------------------------------------------------------------
class DatasetFactory(DjangoModelFactory):
    """A bare dataset, without stimuli (make_text_dataset imports real ones)."""

    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset-{n}")
    modality = "text"


class TargetFactory(DjangoModelFactory):
    """A dataset's label target (the import makes it for imported datasets)."""

    class Meta:
        model = Target

    dataset = factory.SubFactory(DatasetFactory)
    kind = "labels"
    name = factory.LazyAttribute(lambda o: f"{o.dataset.name}: labels")


class PretrainedModelFactory(DjangoModelFactory):
    """A model row as a leaderboard shows it; nothing checks that it could be loaded
    (make_timm_model and make_text_model register real ones)."""

    class Meta:
        model = PretrainedModel

    name = factory.Sequence(lambda n: f"model-{n}")
    source = "timm"
    identifier = factory.SelfAttribute("name")
    modality = "text"
    default_layer = "out"


class RunFactory(DjangoModelFactory):
    """A run row without steps or targets: something for scores to belong to."""

    class Meta:
        model = Run

    dataset = factory.SubFactory(DatasetFactory)
    metrics = factory.LazyFunction(list)


class RunStepFactory(DjangoModelFactory):
    class Meta:
        model = RunStep

    run = factory.SubFactory(RunFactory)
    model = factory.SubFactory(PretrainedModelFactory)


class ScoreFactory(DjangoModelFactory):
    """A score of ``value`` with a confidence interval of ``half_width`` either side; the
    metric is the name in ``metric_key`` (``knn`` for ``knn(k=5)``)."""

    class Meta:
        model = Score

    class Params:
        half_width = 0.02

    run = factory.SubFactory(RunFactory)
    model = factory.SubFactory(PretrainedModelFactory)
    target = factory.SubFactory(TargetFactory, dataset=factory.SelfAttribute("..run.dataset"))
    layer = "out"
    metric_key = "knn(k=5)"
    metric = factory.LazyAttribute(lambda o: o.metric_key.split("(")[0])
    value = 0.5
    ci_low = factory.LazyAttribute(lambda o: o.value - o.half_width)
    ci_high = factory.LazyAttribute(lambda o: o.value + o.half_width)
    n = 100


# --- Studies -------------------------------------------------------------------------------------
class StudyFactory(DjangoModelFactory):
    """A bare study, without items (study_create plans them)."""

    class Meta:
        model = Study

    name = factory.Sequence(lambda n: f"study-{n}")
    kind = "pairs"
    dataset = factory.SubFactory(DatasetFactory)


class ParticipantFactory(DjangoModelFactory):
    class Meta:
        model = Participant

    study = factory.SubFactory(StudyFactory)


class TrialFactory(DjangoModelFactory):
    """A regular trial, issued now and live for an hour."""

    class Meta:
        model = Trial

    participant = factory.SubFactory(ParticipantFactory)
    position = factory.Sequence(lambda n: n)
    role = TrialRole.REGULAR
    status = "issued"
    issued_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.issued_at + timedelta(hours=1))


class EmbeddingImportFactory(DjangoModelFactory):
    """An upload of embeddings waiting for a worker (no staged file: never run here)."""

    class Meta:
        model = "evaluation.EmbeddingImport"

    name = factory.Sequence(lambda n: f"imported-{n}")
    dataset = factory.SubFactory(DatasetFactory)
    file_name = "features.npy"
    staged_path = "tmp/embedding-imports/missing.npy"
