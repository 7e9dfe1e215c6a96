"""The study page's pilot panel: start simulated participants on a draft study (or stop
them), and read what its pilots found (annotation/services/pilot_report.py). The panel loads into
the study page with htmx, and is a page of its own without JavaScript; while a pilot runs
it refreshes itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import get_script_prefix, path
from django.views.decorators.http import require_POST

from annotation import services
from annotation.models import Aggregation, Pilot, PilotStatus, Study
from annotation.services import pilot_report, pilots
from annotation.simulation import persona_label
from core.auth import researcher_required
from core.http import HtmxHttpRequest
from evaluation.models import PretrainedModel

PILOTS_SHOWN = 10


def _label(option: str) -> str:
    text = pilot_report.NOISE_LABELS[option]
    return text[:1].upper() + text[1:]


class PilotForm(forms.Form):
    """What a researcher chooses for a pilot; the service checks the numbers again."""

    model = forms.ModelChoiceField(
        queryset=PretrainedModel.objects.none(),
        help_text="The bots answer from its stored embeddings of the study's dataset.",
    )
    participants = forms.IntegerField(min_value=2, max_value=pilots.MAX_PARTICIPANTS, initial=30)
    speeders = forms.IntegerField(min_value=0, initial=2, label="Planted speeders")
    catch_failers = forms.IntegerField(
        min_value=0, initial=2, label="Planted inattentive (fail catch trials)"
    )
    rating_noise = forms.FloatField(min_value=0, initial=0.5, label=_label("rating_noise"))
    temperature = forms.FloatField(min_value=0.001, initial=0.5, label=_label("temperature"))
    placement_noise = forms.FloatField(min_value=0, initial=0.15, label=_label("placement_noise"))
    lapse_rate = forms.FloatField(min_value=0, max_value=1, initial=0.02, label="Lapse rate")
    target = forms.FloatField(
        min_value=0.01, max_value=0.99, initial=0.8, label="Target reliability"
    )
    seed = forms.IntegerField(min_value=0, required=False)

    def __init__(self, *args: object, study: Study, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        choice = self.fields["model"]
        assert isinstance(choice, forms.ModelChoiceField)
        choice.queryset = (
            PretrainedModel.objects.filter(embedding_sets__dataset_id=study.dataset_id)
            .distinct()
            .order_by("name")
        )
        offered = list(choice.queryset[:2])
        if len(offered) == 1:  # the only choice: chosen already
            choice.initial = offered[0].pk
        applies = pilot_report.NOISE_OPTIONS.get(study.kind, ())
        for name in ("rating_noise", "temperature", "placement_noise"):
            if name not in applies:  # this kind's bots never use it
                del self.fields[name]


@dataclass
class PilotEntry:
    """One pilot as the panel shows it: its report's parts in words people read."""

    pilot: Pilot
    settings: str
    caveat: str = ""
    recruit: str = ""  # how many to recruit, and what that rests on
    rules: list[tuple[str, int, str, str]] = field(default_factory=list)  # rule, n, whom, bots
    bots: list[dict[str, Any]] = field(default_factory=list)
    aggregations: list[Aggregation] = field(default_factory=list)


def _entry(pilot: Pilot) -> PilotEntry:
    report, kind = pilot.report, pilot.study.kind
    entry = PilotEntry(
        pilot=pilot,
        settings=pilot_report.settings_text(kind, pilot.options),
        aggregations=list(pilot.aggregations.all()),  # the pilot's own, marked as simulated
    )
    if "bots" not in report:
        return entry
    reliability = report.get("reliability") or {}
    entry.caveat = reliability.get("caveat") or pilot_report.pilot_caveat(pilot)
    entry.recruit = pilot_report.recruit_text(reliability.get("needed") or {})
    for rule, fired in report["quality"]["rules"].items():
        whom = "; ".join(f"{persona_label(p)}: {n}" for p, n in fired["personas"].items())
        bots = fired["bots"]
        entry.rules.append((rule, len(bots), whom, ", ".join(map(str, bots))))
    entry.bots = [
        {
            **bot,
            "label": persona_label(bot["persona"]),
            "trials": pilot_report.bot_trials_text(bot, kind),
        }
        for bot in report["bots"]
    ]
    return entry


@researcher_required
def study_pilots(request: HtmxHttpRequest, study_id: int) -> HttpResponse:
    """The study's pilots and the form that starts one: the panel (htmx), else a page."""
    study = get_object_or_404(Study.objects.select_related("dataset"), pk=study_id)
    if study.pilots.filter(status=PilotStatus.RUNNING).exists():
        pilots.pilots_fail_stale(study=study)  # a runner that died: say so, take it out
    shown = list(
        study.pilots.select_related("model", "created_by", "study").prefetch_related(
            Prefetch("aggregations", Aggregation.objects.select_related("judgments"))
        )[:PILOTS_SHOWN]
    )
    context = {
        "study": study,
        "entries": [_entry(pilot) for pilot in shown],
        "form": PilotForm(study=study),
        "refusal": pilots.pilot_refusal(study),
        "running": any(p.status == PilotStatus.RUNNING for p in shown),
    }
    template = "annotation/_pilot_panel.html" if request.htmx else "annotation/pilots.html"
    return render(request, template, context)


@researcher_required
@require_POST
def pilot_start(request: HttpRequest, study_id: int) -> HttpResponse:
    """Start a pilot and hand it to a worker; its bots reach this site at the address this
    request came to."""
    study = get_object_or_404(Study.objects.select_related("dataset"), pk=study_id)
    form = PilotForm(request.POST, study=study)
    back = redirect(f"{study.get_absolute_url()}#pilots")
    if not form.is_valid():
        messages.error(
            request,
            "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items()),
        )
        return back
    data = form.cleaned_data
    try:
        with transaction.atomic():
            pilot = pilots.pilot_start(
                study=study,
                model=data["model"],
                participants=data["participants"],
                created_by=request.user,
                base_url=request.build_absolute_uri(get_script_prefix()),
                **{k: data[k] for k in pilots.DEFAULT_OPTIONS if k in data and k != "concurrency"},
            )
            transaction.on_commit(lambda: pilots.pilot_queue(pilot=pilot))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Pilot {pilot.pk} started: {data['participants']} simulated participants are "
            "taking part; its report appears under 'Simulated pilot' when they are done.",
        )
    return back


@researcher_required
@require_POST
def pilot_aggregate(request: HttpRequest, study_id: int, pilot_id: int) -> HttpResponse:
    """The researcher asks for it: the pilot's bots (and only they) as a HumanJudgments
    version of their own, to try the scoring before real data exist."""
    pilot = get_object_or_404(Pilot.objects.select_related("study"), pk=pilot_id, study_id=study_id)
    if pilot.status != PilotStatus.FINISHED:
        # A running pilot's bots are still answering (and are taken out when it ends); a
        # failed one's answers are what was left when it went wrong: neither is a pilot's data.
        messages.error(
            request,
            f"Pilot {pilot.pk} is {pilot.get_status_display().lower()}: only a finished "
            "pilot's judgments can be aggregated.",
        )
        return redirect(f"{pilot.study.get_absolute_url()}#pilot-{pilot.pk}")
    try:
        judgments = services.study_aggregate(
            study=pilot.study, pilot=pilot, created_by=request.user
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Stored pilot {pilot.pk}'s {judgments.judgment_count} simulated judgments as "
            f"{judgments.name} v{judgments.version}, apart from the study's real data.",
        )
    return redirect(f"{pilot.study.get_absolute_url()}#pilot-{pilot.pk}")


@researcher_required
@require_POST
def pilot_stop(request: HttpRequest, study_id: int, pilot_id: int) -> HttpResponse:
    """Stop a running pilot (pilots.pilot_stop): a queued one (or one whose runner died)
    fails at once, saying who stopped it, its sessions ended and its counts taken out; one
    under way is asked to stop, and its runner does the same once its bots have stopped
    (the panel says "Stopping" meanwhile)."""
    pilot = get_object_or_404(Pilot.objects.select_related("study"), pk=pilot_id, study_id=study_id)
    outcome = pilots.pilot_stop(pilot=pilot, by=request.user)
    if outcome == pilots.STOPPED:
        messages.success(
            request,
            f"Pilot {pilot.pk} stopped: its simulated sessions were ended and their counts "
            "taken out of the study.",
        )
    elif outcome == pilots.STOPPING:
        messages.success(
            request,
            f"Pilot {pilot.pk} is stopping: its bots stop at their next step, then their "
            "sessions are ended and their counts taken out of the study.",
        )
    else:
        messages.error(request, f"Pilot {pilot.pk} had ended already.")
    return redirect(f"{pilot.study.get_absolute_url()}#pilot-{pilot.pk}")


# The routes, for annotation/urls.py (``*pilot_views.urlpatterns``): names in its namespace.
urlpatterns = [
    path("studies/<int:study_id>/pilots/", study_pilots, name="study_pilots"),
    path("studies/<int:study_id>/pilots/start/", pilot_start, name="pilot_start"),
    path(
        "studies/<int:study_id>/pilots/<int:pilot_id>/aggregate/",
        pilot_aggregate,
        name="pilot_aggregate",
    ),
    path("studies/<int:study_id>/pilots/<int:pilot_id>/stop/", pilot_stop, name="pilot_stop"),
]
