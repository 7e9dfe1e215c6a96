"""Study pages. Researchers design, watch and export studies; participants reach only their
own trials, through the study link and then their own unguessable participant link.

Participant pages work with and without JavaScript: the trial form posts normally (then a
redirect shows the next trial); with htmx the next trial replaces the current one in place.
"""

from __future__ import annotations

import html
import json
import math
import secrets
from typing import Any

import markdown
import nh3
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from annotation import exports, selectors, services
from annotation.forms import ConsentForm, ExcludeForm, ProposeForm, StudyForm
from annotation.models import (
    Participant,
    Pilot,
    PilotStatus,
    Study,
    StudyKind,
    StudyStatus,
    Tag,
    Trial,
)
from annotation.services import pilots
from core.auth import researcher_required
from core.http import HtmxHttpRequest
from core.querystring import text_param
from evaluation.archived_lists import list_with_archived
from evaluation.models import Modality, Stimulus
from evaluation.stimulus_views import media_response, poster_response

MEDIA_MODALITIES = (Modality.AUDIO, Modality.VIDEO)  # stimuli that are clips to play
SESSION_KEY = "study_participants"  # study id -> participant token, for returning visitors


# What researcher-written markdown may become on a participant's page. Raw HTML is escaped
# before markdown runs; the sanitiser then keeps only these tags and attributes, and links
# and images only to the web, to mail or to this site (relative addresses): javascript:,
# vbscript:, data: and any other scheme are dropped, in any spelling.
MARKDOWN_TAGS = {
    "a", "abbr", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "img", "li", "ol", "p", "pre", "strong", "ul",
}  # fmt: skip
MARKDOWN_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "img": {"src", "alt", "title"}}
MARKDOWN_URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> SafeString:
    """Markdown without raw HTML and without script: the text is escaped first (HTML in it
    shows as text), and the result goes through nh3's allow-list (MARKDOWN_*)."""
    rendered = markdown.markdown(html.escape(text, quote=False))
    return mark_safe(  # sanitised by nh3 just here
        nh3.clean(
            rendered,
            tags=MARKDOWN_TAGS,
            attributes=MARKDOWN_ATTRIBUTES,
            url_schemes=MARKDOWN_URL_SCHEMES,
            link_rel="noopener noreferrer nofollow",
        )
    )


# --- Researcher -----------------------------------------------------------------------------
@researcher_required
def study_list(request: HttpRequest) -> HttpResponse:
    studies, archived = list_with_archived(request, selectors.study_list)  # ?archived=1
    return render(request, "annotation/study_list.html", {"studies": studies, **archived})


@researcher_required
def study_create(request: HttpRequest) -> HttpResponse:
    # ?kind=: the form for that kind only (its fieldsets; without JavaScript, too).
    kind = request.GET.get("kind", "")
    kind = kind if kind in StudyKind.values else ""
    form = StudyForm(request.POST or None, request.FILES or None, initial={"kind": kind})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        plan = services.ItemPlan(
            mode=data["item_mode"],
            count=data.get("item_count") or 0,
            stimuli=data.get("item_orders", []),
            seed=data["seed"],
        )
        try:
            study = services.study_create(
                dataset=data["dataset"],
                name=data["name"],
                kind=data["kind"],
                items=plan,
                created_by=request.user,
                **form.design(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Created {study} with {study.items.count()} items.")
            return redirect(study)
    context = {
        "form": form,
        "kind_fixed": kind,
        "kind_label": StudyKind(kind).label if kind else "",
        "kinds": StudyKind.choices,
    }
    return render(request, "annotation/study_form.html", context)


@researcher_required
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study.objects.select_related("dataset"), pk=study_id)
    reliability = selectors.study_reliability(study)
    coverage = selectors.study_coverage(study)
    target = _target_reliability(request)
    needed = None
    if study.kind == StudyKind.PAIRS and reliability and coverage.items:
        needed = selectors.judgments_needed(
            reliability=reliability.get("mean"),
            judgments_per_item=coverage.responses / coverage.items,
            items=coverage.items,
            target=target,
        )
    elif study.is_arrangement and reliability:
        # Each session is a whole matrix: the prophecy counts participants.
        needed = selectors.judgments_needed(
            reliability=reliability.get("mean"),
            judgments_per_item=selectors.sessions_completed(study),
            items=1,
            target=target,
        )
    return render(
        request,
        "annotation/study_detail.html",
        {
            "study": study,
            "link": request.build_absolute_uri(study.participant_url()),
            "coverage": coverage,
            "reliability": reliability,
            "trend": selectors.reliability_trend(study),
            "needed": needed,
            "target": target,
            "participants": selectors.study_participants(study),
            "refused": selectors.refused_resumes(study),
            "aggregations": study.aggregations.select_related("judgments__target"),
            # Runs score against the newest aggregation of real participants.
            "scoring_aggregation": study.aggregations.filter(pilot=None)
            .select_related("judgments__target")
            .first(),
            "tags": selectors.tags_summary(study) if study.kind == StudyKind.TAGS else None,
        },
    )


def _target_reliability(request: HttpRequest) -> float:
    try:
        target = float(request.GET.get("target", "0.8"))
    except ValueError:
        return 0.8
    return target if 0 < target < 1 else 0.8


@researcher_required
@require_POST
def study_status(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    pilots.pilots_fail_stale(study=study)  # a pilot whose runner died must not block opening
    try:
        services.study_set_status(study=study, status=request.POST.get("status", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{study} is now {study.get_status_display().lower()}.")
    return redirect(study)


@researcher_required
@require_POST
def study_aggregate(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    try:
        judgments = services.study_aggregate(study=study, created_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Stored {judgments.judgment_count} judgments as {judgments.name} "
            f"v{judgments.version}; runs can now score models against it.",
        )
        return redirect(f"{study.get_absolute_url()}#aggregate-result")
    return redirect(study)


@researcher_required
@require_POST
def study_propose(request: HttpRequest) -> HttpResponse:
    """From the compare page: a draft study where the chosen models disagree most."""
    form = ProposeForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
        return redirect("evaluation:compare")
    data = form.cleaned_data
    models = sorted(data["models"], key=lambda m: request.POST.getlist("models").index(str(m.pk)))
    try:
        study = services.study_create_discriminating(
            target=data["target"],
            models=models,
            kind=data["kind"],
            count=data["count"],
            judgments_per_item=data["judgments_per_item"],
            created_by=request.user,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("evaluation:compare")
    messages.success(
        request,
        f"Created the draft study {study.name} with {study.items.count()} items; review it, "
        "then open it to participants.",
    )
    return redirect(study)


@researcher_required
@require_POST
def study_descriptions(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    try:
        origin, count = services.study_descriptions_create(study=study)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Stored {count} tags as the description set {origin!r}: register a language-based "
            f"model over it ('{origin} | sentence-transformers:<model>') to score it.",
        )
    return redirect(study)


@researcher_required
@require_POST
def participant_exclude(request: HttpRequest, study_id: int, participant_id: int) -> HttpResponse:
    # A pilot's simulated participants are the pilot's to count, not the researcher's.
    participant = get_object_or_404(
        Participant, pk=participant_id, study_id=study_id, pilot__isnull=True
    )
    form = ExcludeForm(request.POST)
    if form.is_valid():
        services.participant_set_excluded(
            participant=participant,
            excluded=bool(form.cleaned_data["excluded"]),
            reason=form.cleaned_data["reason"],
        )
    else:
        messages.error(
            request, "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
    return redirect("annotation:study_detail", study_id)


@researcher_required
def study_export(request: HttpRequest, study_id: int, what: str, fmt: str) -> StreamingHttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    export = exports.EXPORTS.get(what)
    if export is None or fmt not in ("csv", "json"):
        raise Http404("Unknown export.")
    rows = export.rows(study)
    body = exports.as_csv(rows, export.fields) if fmt == "csv" else exports.as_json(rows)
    response = StreamingHttpResponse(
        body, content_type="text/csv" if fmt == "csv" else "application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-{what}.{fmt}"'
    return response


# --- Participants ---------------------------------------------------------------------------
def study_entry(request: HttpRequest, token: str) -> HttpResponse:
    """The link a participant opens: consent and instructions, then their own trials.

    A returning participant continues through what only they hold: this browser's session
    (set when they consented here or opened their private link here) or their account. A
    recruiter id alone resumes nothing: it gets a page that says what to do instead."""
    study = get_object_or_404(Study.objects.select_related("dataset", "created_by"), token=token)
    external_id = request.GET.get(study.external_id_param, "") if study.external_id_param else ""
    pilot = _pilot(request, study)
    returning = _returning_participant(request, study)
    if returning is not None:
        return redirect(returning)
    try:
        services.participant_check_external_id(study=study, external_id=external_id)
        if study.status != StudyStatus.OPEN and pilot is None:
            return _closed(request, study)
        # Told before consent, not after the practice trials (the first item is reserved at
        # consent: participant_start).
        if not services.study_has_room(study=study):
            raise services.StudyFull("No place is free.")
        form = ConsentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            participant = services.participant_start(
                study=study,
                external_id=request.POST.get("external_id", external_id),
                user=request.user,
                pilot=pilot,
            )
            _remember(request, participant)
            return redirect(participant)
    except services.ParticipantConflict as conflict:
        return render(
            request,
            "annotation/participant/conflict.html",
            {"study": study, "external_id": conflict.participant.external_id},
            status=409,
        )
    except services.StudyFull:
        if services.study_close_if_complete(study=study) or (
            study.status != StudyStatus.OPEN and pilot is None
        ):
            return _closed(request, study)
        return render(request, "annotation/participant/full.html", {"study": study}, status=503)
    return render(
        request,
        "annotation/participant/entry.html",
        {
            "study": study,
            "form": form,
            "external_id": external_id,
            "consent": render_markdown(study.consent_md),
            "instructions": render_markdown(study.instructions_md),
        },
    )


def _pilot(request: HttpRequest, study: Study) -> Pilot | None:
    """The running pilot whose token the link carries (its bots may enter a study that is
    not open yet); None for everyone else. A wrong or finished token admits nothing."""
    token = request.GET.get("pilot", "")
    if not token or len(token) > 40 or not token.isprintable():  # Pilot.token: 40, printable
        return None
    pilot = Pilot.objects.filter(token=token, study=study).first()
    if pilot is None or not services.pilot_admits(pilot=pilot, study=study):
        return None
    return pilot


def _closed(request: HttpRequest, study: Study) -> HttpResponse:
    """Closed by the researcher, or closed by itself once complete (the page says which)."""
    return render(request, "annotation/participant/closed.html", {"study": study}, status=403)


def _returning_participant(request: HttpRequest, study: Study) -> Participant | None:
    token = request.session.get(SESSION_KEY, {}).get(str(study.pk))
    if token:
        # A pilot's bot is resumed only while its pilot runs: a browser that followed a
        # pilot link must not land in a simulated session once the study is open.
        found = (
            Participant.objects.filter(study=study, token=token)
            .filter(Q(pilot=None) | Q(pilot__status=PilotStatus.RUNNING))
            .first()
        )
        if found is not None:
            return found
    return services.participant_of_account(study=study, user=request.user)


def _remember(request: HttpRequest, participant: Participant) -> None:
    """This browser holds the participant's session: the study link continues it here."""
    remembered = request.session.get(SESSION_KEY, {})
    if remembered.get(str(participant.study_id)) != participant.token:
        request.session[SESSION_KEY] = {**remembered, str(participant.study_id): participant.token}


def _participant(token: str) -> Participant:
    return _participant_and_trial(token, None)[0]


def _participant_and_trial(token: str, trial_id: int | None) -> tuple[Participant, Trial | None]:
    """The participant (with its study) and, if asked, the trial of theirs being answered."""
    found = selectors.participant_and_trial(token, trial_id)
    if found is None:
        raise Http404("No such participant link.")
    return found


def participant_trial(request: HtmxHttpRequest, token: str) -> HttpResponse:
    problem = ""
    trial = answer = None
    if request.method == "POST":
        try:
            answer = _answer(request)
        except services.TrialProblem as exc:
            problem = " ".join(exc.messages)
    participant, answered = _participant_and_trial(token, answer.trial_id if answer else None)
    if answer is not None:
        try:
            if not request.htmx:
                services.response_submit(participant=participant, answer=answer, trial=answered)
                return redirect(participant)  # post/redirect/get: a reload does not resubmit
            # htmx: the answer and the next trial in one go (None: the session is over).
            _, trial = services.response_submit_and_next(
                participant=participant, answer=answer, trial=answered
            )
        except services.TrialProblem as exc:
            problem = " ".join(exc.messages)
    if request.method == "GET" and not request.htmx:
        # A page opened from the private link (on another device, say): from now on this
        # browser continues the session from the study link too. Full page loads only: the
        # answers themselves (htmx) do not read the session.
        _remember(request, participant)
    if trial is None:
        trial = services.trial_current(participant=participant)
    if trial is None:
        if request.htmx:
            response = HttpResponse(status=204)
            response["HX-Redirect"] = reverse("annotation:participant_done", args=[token])
            return response
        return redirect("annotation:participant_done", token)
    context = _trial_context(participant, trial, problem)
    template = "annotation/participant/trial.html"
    if request.htmx:
        template += "#trial"
    return render(request, template, context, status=400 if problem and not request.htmx else 200)


def _answer(request: HttpRequest) -> services.Answer:
    post = request.POST

    def number(name: str) -> float | None:
        raw = post.get(name, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise services.TrialProblem(f"{name} must be a number.") from None
        if not math.isfinite(value):
            raise services.TrialProblem(f"{name} must be a finite number.")
        return value

    ratings: dict[int, int | None] = {}
    for key, value in post.items():
        assert isinstance(value, str)  # a form field's last value (the stubs allow a list)
        if key.startswith("tag_"):
            try:
                tag_id = int(key.removeprefix("tag_"))
                ratings[tag_id] = None if value == "flag" else int(value)
            except ValueError:
                raise services.TrialProblem("A tag rating is not valid.") from None
    trial_id = number("trial")
    chosen = number("chosen")
    rt = number("rt_ms")
    return services.Answer(
        trial_id=int(trial_id or 0),
        idempotency_key=post.get("key", ""),
        value=number("value"),
        chosen=int(chosen) if chosen is not None else None,
        rt_ms=int(rt) if rt is not None else None,
        tag_ratings=ratings,
        new_tags=[t for t in post.get("new_tags", "").split(",") if t.strip()],
        placements=_placements(post.get("arrangement", "")),
    )


MAX_ARRANGEMENT_BYTES = 200_000  # thousands of items' positions; more is not an arrangement


def _placements(raw: str) -> tuple[services.Placement, ...]:
    """The arena's answer: JSON [[stimulus id, x, y, moves], ...] in the trial's order. Only
    its shape is checked here; the services check it against the trial."""
    if not raw.strip():
        return ()
    if len(raw) > MAX_ARRANGEMENT_BYTES:
        raise services.TrialProblem("The arrangement is too large.")
    problem = services.TrialProblem(
        "The arrangement is not valid: expected [stimulus, x, y, moves] for every item."
    )
    try:
        # parse_constant: NaN and Infinity are not JSON, and no position either. Deep nesting
        # (RecursionError) and integers too large for a float (OverflowError) are not either.
        entries = json.loads(raw, parse_constant=lambda name: float("nan"))
    except (ValueError, RecursionError):
        raise problem from None
    if not isinstance(entries, list):
        raise problem
    placements = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 4):
            raise problem
        stimulus, x, y, moves = entry
        numbers = (x, y)
        if not (
            type(stimulus) is int
            and type(moves) is int
            and all(type(n) in (int, float) for n in numbers)
        ):
            raise problem
        try:
            placements.append(services.Placement(stimulus, float(x), float(y), moves))
        except OverflowError:
            raise problem from None
    return tuple(placements)


def _trial_context(participant: Participant, trial: Trial, problem: str) -> dict[str, Any]:
    study = participant.study
    # Slots before this one are answered (or skipped): no count query needed.
    done, total = trial.position, len(participant.plan)
    stimuli = selectors.trial_stimuli(trial)
    tags = list(Tag.objects.in_bulk(trial.shown_tags).values()) if trial.shown_tags else []
    tags.sort(key=lambda tag: trial.shown_tags.index(tag.pk))
    media = _media_kind(study, stimuli)
    return {
        "study": study,
        "participant": participant,
        "trial": trial,
        "stimuli": stimuli,
        "media": media,
        # In the browser only (static/js/study.js): nothing the server receives can prove
        # that a clip was played, so an answer without it is not refused here.
        "require_playback": study.require_playback and bool(media),
        # Multi-arrangement: index and stimulus in the trial's order (a catch trial shows
        # one stimulus twice).
        "arena_items": list(enumerate(stimuli)) if study.is_arrangement else [],
        "reference": stimuli[0] if study.kind == StudyKind.TWO_AFC else None,
        "options": stimuli[1:] if study.kind == StudyKind.TWO_AFC else stimuli,
        "scale": range(study.scale_min, study.scale_max + 1),
        "tags": tags,
        "key": secrets.token_hex(16),
        "action": reverse("annotation:participant_trial", args=[participant.token]),
        "done": done,
        "total": total,
        "percent": round(100 * done / total) if total else 100,
        "problem": problem,
    }


def _media_kind(study: Study, stimuli: list[Stimulus]) -> str:
    """ "audio" or "video" when the trial's stimuli are clips to play, else ""."""
    if not any(s.file for s in stimuli):
        return ""
    modality = selectors.dataset_modality(study.dataset_id)
    return modality if modality in MEDIA_MODALITIES else ""


def participant_done(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.status == "consented":
        return redirect(participant)
    study = participant.study
    return render(
        request,
        "annotation/participant/done.html",
        {"study": study, "participant": participant, "code": study.completion_code},
    )


def participant_stimulus(request: HttpRequest, token: str, stimulus_id: int) -> HttpResponseBase:
    """A stimulus file, only while it is part of one of this participant's trials; byte
    ranges are answered (phones play video only from servers that do)."""
    stimulus = _shown_stimulus(token, stimulus_id)
    if not stimulus.file:
        raise Http404("This stimulus is a text.")
    return media_response(request, stimulus.file)


def participant_poster(request: HttpRequest, token: str, stimulus_id: int) -> HttpResponseBase:
    """A video stimulus' poster frame, under the same rule as its file."""
    return poster_response(_shown_stimulus(token, stimulus_id))


def _shown_stimulus(token: str, stimulus_id: int) -> Stimulus:
    """A stimulus of this participant's study that one of their trials shows (else 403)."""
    participant = _participant(token)
    shown = participant.trials.values_list("shown", flat=True)
    if not any(stimulus_id in ids for ids in shown):
        raise PermissionDenied("This stimulus is not part of your trials.")
    return get_object_or_404(
        participant.study.dataset.stimuli.select_related("dataset"), pk=stimulus_id
    )


def tag_suggest(request: HttpRequest, token: str) -> JsonResponse:
    participant = _participant(token)
    if participant.study.kind != StudyKind.TAGS:
        raise Http404("Not a tag study.")
    return JsonResponse(
        {
            "tags": selectors.tag_vocabulary(
                participant.study, text_param(request.GET, "q", max_length=services.TAG_MAX_LENGTH)
            )
        }
    )
