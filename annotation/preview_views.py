"""A study as its participants see it, for its researcher: the consent page, a few trials of
each role and the last page, rendered with the participant pages' own templates, while the
study is a draft (and later). Nothing is recorded: no participant starts, no item is claimed
and an answer only moves the preview on (annotation/services/preview.py)."""

from __future__ import annotations

import secrets

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from annotation import views
from annotation.forms import ConsentForm
from annotation.models import Item, Study
from annotation.services import preview
from core.auth import researcher_required
from core.http import HtmxHttpRequest
from core.querystring import int_param

SEED_MAX = 2**31 - 1


@researcher_required
def study_preview(request: HttpRequest, study_id: int) -> HttpResponse:
    """The study link's first page; agreeing starts a preview session (a seed, not a
    participant), whatever the study's status and however full it is."""
    study = get_object_or_404(Study.objects.select_related("dataset", "created_by"), pk=study_id)
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        return redirect(_step_url(study, 0, secrets.randbelow(SEED_MAX)))
    return render(
        request,
        "annotation/preview_entry.html",
        {
            "study": study,
            "form": form,
            "preview": True,
            "consent": views.render_markdown(study.consent_md),
            "instructions": views.render_markdown(study.instructions_md),
        },
    )


@researcher_required
def study_preview_trial(request: HtmxHttpRequest, study_id: int, step: int) -> HttpResponse:
    """Step ``step`` of a preview session (its seed in ?seed=): a trial, or the last page
    once the steps are done. Submitting records nothing and shows the next step."""
    study = get_object_or_404(Study.objects.select_related("dataset", "created_by"), pk=study_id)
    seed = _seed(request)
    if request.method == "POST":
        following = _step_url(study, step + 1, seed)
        if request.htmx:  # the participant page answers in place; the preview reloads
            response = HttpResponse(status=204)
            response["HX-Redirect"] = following
            return response
        return redirect(following)
    participant = preview.preview_participant(study, seed)
    steps = preview.preview_steps(participant)
    if step >= len(steps):
        participant.status = "completed"  # the done page shows the completion code
        return render(
            request,
            "annotation/preview_done.html",
            {
                "study": study,
                "participant": participant,
                "code": study.completion_code,
                "preview": True,
                "restart": reverse("annotation:study_preview", args=[study.pk]),
            },
        )
    try:
        trial = preview.preview_trial(participant, steps[step], seed)
    except Item.DoesNotExist as exc:
        raise Http404(str(exc)) from None
    # The participant page's own context: the preview cannot drift from what they see.
    context = views._trial_context(participant, trial, "")
    context.update(
        preview=True,
        action=_step_url(study, step, seed),
        step=step + 1,
        steps=len(steps),
        role_note=preview.preview_role_note(study, trial.role),
        skip=_step_url(study, step + 1, seed),
    )
    return render(request, "annotation/preview_trial.html", context)


def _seed(request: HttpRequest) -> int:
    """The preview session's seed; 0 for anything else (the query string is anyone's to
    type: '²' passes str.isdigit() but not int())."""
    seed = int_param(request.GET, "seed", minimum=0, maximum=SEED_MAX, default=0)
    assert seed is not None  # the default is a number
    return seed


def _step_url(study: Study, step: int, seed: int) -> str:
    return f"{reverse('annotation:study_preview_trial', args=[study.pk, step])}?seed={seed}"


# The routes, for annotation/urls.py (``*preview_views.urlpatterns``): names in its namespace.
urlpatterns = [
    path("studies/<int:study_id>/preview/", study_preview, name="study_preview"),
    path(
        "studies/<int:study_id>/preview/<int:step>/",
        study_preview_trial,
        name="study_preview_trial",
    ),
]
