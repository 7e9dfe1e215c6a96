"""Archive, unarchive and delete datasets, targets, models and studies (researchers).

Each object's page links to its archive page (templates/evaluation/_archive.html), which
lists what depends on the object and what blocks a deletion, then offers archiving (it
leaves the public lists, keeps its scores) and deleting (scores only on purpose). Here in
the annotation app because a dataset's dependents include its studies (see
annotation/services/archive.py); the addresses sit under each object's own
(``/datasets/<id>/archive/``...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.db import IntegrityError, models
from django.db.models import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from annotation.models import Study
from annotation.services.archive import (
    DeleteRefused,
    dataset_delete,
    dataset_dependents,
    model_delete,
    model_dependents,
    refused_on_conflict,
    study_delete,
    study_dependents,
)
from core.auth import researcher_required
from evaluation.models import Dataset, PretrainedModel, Target
from evaluation.services.archive import (
    Dependents,
    archive_set,
    target_delete,
    target_dependents,
)

SCORES_TICK = "Delete the scores too"


@dataclass(frozen=True)
class Kind:
    """What can be archived and deleted, and where its pages are."""

    noun: str
    model: type[models.Model]
    prefix: str  # the URL segment of its pages
    list_url: str  # where its researcher goes once it is deleted
    dependents: Callable[[Any], Dependents]
    delete: Callable[[Any, bool], None]  # (object, the tick)
    tick: str  # what the tick on the delete form agrees to


KINDS = {
    "dataset": Kind(
        "dataset",
        Dataset,
        "datasets",
        "evaluation:dataset_list",
        dataset_dependents,
        lambda o, tick: dataset_delete(o, delete_scores=tick),
        SCORES_TICK,
    ),
    "model": Kind(
        "model",
        PretrainedModel,
        "models",
        "evaluation:model_list",
        model_dependents,
        lambda o, tick: model_delete(o, delete_scores=tick),
        SCORES_TICK,
    ),
    "target": Kind(
        "target",
        Target,
        "leaderboards",
        "evaluation:leaderboards",
        target_dependents,
        lambda o, tick: target_delete(o, delete_scores=tick),
        SCORES_TICK,
    ),
    "study": Kind(
        "study",
        Study,
        "studies",
        "annotation:study_list",
        study_dependents,
        lambda o, tick: study_delete(o, delete_targets=tick),
        "Delete the targets made from it and their scores too",
    ),
}


class DeleteForm(forms.Form):
    delete_scores = forms.BooleanField(required=False)


def _object(kind: str, object_id: int) -> tuple[Kind, Any]:
    if kind not in KINDS:
        raise Http404(f"Nothing called {kind!r} can be archived.")
    spec = KINDS[kind]
    return spec, get_object_or_404(spec.model, pk=object_id)


def _name(obj: Any) -> str:
    return str(getattr(obj, "name", obj))


@researcher_required
def archive_page(request: HttpRequest, object_id: int, kind: str) -> HttpResponse:
    """GET: what depends on the object, and the archive and delete forms. POST: archive."""
    spec, obj = _object(kind, object_id)
    if request.method == "POST":
        archive_set(obj, archived=True)
        messages.success(
            request,
            f"Archived {spec.noun} {_name(obj)}: it is left out of the lists and keeps its "
            "scores. Unarchive it here to list it again.",
        )
        return redirect(obj)
    return render(
        request,
        "evaluation/archive.html",
        {
            "kind": kind,
            "spec": spec,
            "obj": obj,
            "name": _name(obj),
            "dependents": spec.dependents(obj),
        },
    )


@researcher_required
@require_POST
def unarchive(request: HttpRequest, object_id: int, kind: str) -> HttpResponse:
    spec, obj = _object(kind, object_id)
    archive_set(obj, archived=False)
    messages.success(request, f"Unarchived {spec.noun} {_name(obj)}: it is listed again.")
    return redirect(obj)


@researcher_required
def delete(request: HttpRequest, object_id: int, kind: str) -> HttpResponse:
    """POST: delete (refused, with why, while something blocks it). GET: the archive page,
    which shows what goes with it first."""
    archive_url = reverse(f"annotation:{kind}_archive", args=[object_id])
    if request.method != "POST":
        return redirect(archive_url)
    spec, obj = _object(kind, object_id)
    form = DeleteForm(request.POST)
    tick = form.is_valid() and form.cleaned_data["delete_scores"]
    name = _name(obj)
    try:
        spec.delete(obj, tick)
    except (ProtectedError, IntegrityError) as exc:  # a target's delete, raced
        messages.error(request, str(refused_on_conflict(f"{spec.noun.capitalize()} {name}", exc)))
        return redirect(archive_url)
    except DeleteRefused as exc:
        messages.error(request, str(exc))
        return redirect(archive_url)
    messages.success(request, f"Deleted {spec.noun} {name}.")
    return redirect(spec.list_url)


def _routes() -> list[URLPattern]:
    routes = []
    for kind, spec in KINDS.items():
        routes += [
            path(
                f"{spec.prefix}/<int:object_id>/archive/",
                archive_page,
                {"kind": kind},
                name=f"{kind}_archive",
            ),
            path(
                f"{spec.prefix}/<int:object_id>/unarchive/",
                unarchive,
                {"kind": kind},
                name=f"{kind}_unarchive",
            ),
            path(
                f"{spec.prefix}/<int:object_id>/delete/",
                delete,
                {"kind": kind},
                name=f"{kind}_delete",
            ),
        ]
    return routes


urlpatterns = _routes()
