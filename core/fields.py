"""Facts about models' fields, typed."""

from __future__ import annotations

from django.db import models


def max_length(model: type[models.Model], name: str) -> int:
    """The ``max_length`` of one of the model's text fields (an error for a field without)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.max_length is not None, (model, name)
    return field.max_length
