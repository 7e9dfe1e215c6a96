"""The factories of tests/factories.py build valid rows from their defaults alone."""

from __future__ import annotations

import pytest

from tests import factories

pytestmark = pytest.mark.django_db


def test_every_factory_builds_a_valid_row_from_its_defaults():
    researcher = factories.ResearcherFactory()
    assert researcher.is_staff and not researcher.is_superuser
    assert researcher.check_password("user-pass-123")
    assert factories.AdminFactory().is_superuser
    score = factories.ScoreFactory(value=0.7, half_width=0.1, metric_key="knn(k=1)")
    assert score.metric == "knn"
    assert (score.ci_low, score.ci_high) == pytest.approx((0.6, 0.8))
    assert score.target.dataset == score.run.dataset
    assert factories.RunStepFactory().model.default_layer == "out"
    trial = factories.TrialFactory()
    assert trial.expires_at > trial.issued_at
    assert trial.participant.study.dataset.modality == "text"
