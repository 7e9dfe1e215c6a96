"""A noise ceiling reported elsewhere (the paper that published the judgments), entered by a
researcher for a target whose judgments cannot give one here; kept apart from the computed
ceiling, which scores carry."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from evaluation.metrics import METRICS, ceiling_check
from evaluation.models import Target


def published_ceiling_set(*, target: Target, value: float | None, source: str) -> Target:
    """Store (or with ``value`` None, remove) the target's published ceiling and its source."""
    if value is None:
        target.published_ceiling, target.published_ceiling_source = None, ""
    else:
        if target.judgments_id is None:
            raise ValidationError("Label targets have no human ceiling to publish.")
        main = next(name for name, info in METRICS.items() if info.main_for == target.kind)
        problem = ceiling_check(main, value)
        if problem:
            raise ValidationError(problem)
        if not source.strip():
            raise ValidationError("Say where the published ceiling comes from (its source).")
        target.published_ceiling, target.published_ceiling_source = value, source.strip()
    target.save(update_fields=["published_ceiling", "published_ceiling_source"])
    return target
