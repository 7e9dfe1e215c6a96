"""Every page and form, for every role: admin, researcher, viewer (an account that is not a
researcher), participant (holds a study link and its own participant token, no account) and
anonymous. The table below must name every route of the site, so a new page cannot ship
without a decision about who may see it. The REST API has its own matrix (tests/api).
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation import services as study_services
from annotation.models import Participant, Pilot, Study
from annotation.services import ItemPlan
from tests.annotation.test_media_trials import make_video_dataset
from tests.conftest import make_image_dataset, make_text_dataset, make_text_model
from tests.factories import AdminFactory, EmbeddingImportFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "participant", "viewer", "researcher", "admin")
# Who may use a route: everyone; researchers only (staff accounts); whoever holds the
# participant token in the URL (that token is the participant's credential).
PUBLIC, RESEARCHER, TOKEN = "public", "researcher", "token"

ROUTES: dict[str, tuple[str, str, str]] = {
    # name: (access, method, which objects the URL needs)
    "home": (PUBLIC, "GET", ""),
    "login": (PUBLIC, "GET", ""),
    "logout": (PUBLIC, "POST", ""),
    "evaluation:leaderboards": (PUBLIC, "GET", ""),
    "evaluation:leaderboard": (PUBLIC, "GET", "target"),
    "evaluation:leaderboard_overall": (PUBLIC, "GET", ""),
    "evaluation:leaderboard_stack": (RESEARCHER, "POST", "target"),
    "evaluation:leaderboard_rescore": (RESEARCHER, "POST", "target"),
    "evaluation:leaderboard_published_ceiling": (RESEARCHER, "POST", "target"),
    "evaluation:leaderboard_layer_choice": (PUBLIC, "GET", "target"),
    "evaluation:target_differences": (PUBLIC, "GET", "target"),
    "evaluation:compare": (RESEARCHER, "GET", ""),
    # A figure's SVG, PNG or CSV: researchers (the kinds of public pages are public).
    "evaluation:figure_download": (RESEARCHER, "GET", "figure"),
    "evaluation:compare_section": (RESEARCHER, "GET", ""),
    "evaluation:compare_pairs_csv": (RESEARCHER, "GET", ""),
    "evaluation:model_list": (RESEARCHER, "GET", ""),
    "evaluation:model_create": (RESEARCHER, "GET", ""),
    "evaluation:embeddings_import": (RESEARCHER, "GET", ""),
    "evaluation:embeddings_import_detail": (RESEARCHER, "GET", "embedding_import"),
    "evaluation:model_detail": (RESEARCHER, "GET", "model"),
    "evaluation:dataset_list": (RESEARCHER, "GET", ""),
    "evaluation:dataset_create": (RESEARCHER, "GET", ""),
    "evaluation:dataset_detail": (RESEARCHER, "GET", "dataset"),
    "evaluation:descriptions_import": (RESEARCHER, "POST", "dataset"),
    "evaluation:judgments_import": (RESEARCHER, "GET", ""),
    "evaluation:judgments_preview": (RESEARCHER, "POST", ""),
    "evaluation:stimulus_file": (RESEARCHER, "GET", "stimulus"),
    "evaluation:stimulus_poster": (RESEARCHER, "GET", "stimulus"),
    "evaluation:run_list": (RESEARCHER, "GET", ""),
    "evaluation:run_create": (RESEARCHER, "GET", ""),
    "evaluation:run_detail": (RESEARCHER, "GET", "run"),
    "evaluation:run_cancel": (RESEARCHER, "POST", "run"),
    "evaluation:run_retry": (RESEARCHER, "POST", "run"),
    "annotation:study_list": (RESEARCHER, "GET", ""),
    "annotation:study_create": (RESEARCHER, "GET", ""),
    "annotation:study_propose": (RESEARCHER, "POST", ""),
    "annotation:study_detail": (RESEARCHER, "GET", "study"),
    "annotation:study_status": (RESEARCHER, "POST", "study"),
    "annotation:study_aggregate": (RESEARCHER, "POST", "study"),
    "annotation:study_descriptions": (RESEARCHER, "POST", "study"),
    "annotation:participant_exclude": (RESEARCHER, "POST", "study participant"),
    "annotation:study_pilots": (RESEARCHER, "GET", "study"),
    "annotation:pilot_start": (RESEARCHER, "POST", "study"),
    "annotation:pilot_aggregate": (RESEARCHER, "POST", "study pilot"),
    "annotation:pilot_stop": (RESEARCHER, "POST", "study pilot"),
    "annotation:study_export": (RESEARCHER, "GET", "study export"),
    "annotation:study_preview": (RESEARCHER, "GET", "study"),
    "annotation:study_preview_trial": (RESEARCHER, "GET", "study step"),
    # Archive pages; a GET of a delete address shows the archive page (the POST that deletes
    # is tested in tests/evaluation/test_archive.py).
    "annotation:dataset_archive": (RESEARCHER, "GET", "dataset"),
    "annotation:dataset_unarchive": (RESEARCHER, "POST", "dataset"),
    "annotation:dataset_delete": (RESEARCHER, "GET", "dataset"),
    "annotation:model_archive": (RESEARCHER, "GET", "model"),
    "annotation:model_unarchive": (RESEARCHER, "POST", "model"),
    "annotation:model_delete": (RESEARCHER, "GET", "model"),
    "annotation:target_archive": (RESEARCHER, "GET", "target"),
    "annotation:target_unarchive": (RESEARCHER, "POST", "target"),
    "annotation:target_delete": (RESEARCHER, "GET", "target"),
    "annotation:study_archive": (RESEARCHER, "GET", "study"),
    "annotation:study_unarchive": (RESEARCHER, "POST", "study"),
    "annotation:study_delete": (RESEARCHER, "GET", "study"),
    "annotation:study_entry": (PUBLIC, "GET", "study_token"),
    "annotation:participant_trial": (TOKEN, "GET", "token"),
    "annotation:participant_done": (TOKEN, "GET", "token"),
    "annotation:tag_suggest": (TOKEN, "GET", "tag_token"),
    "annotation:participant_stimulus": (TOKEN, "GET", "token shown_stimulus"),
    "annotation:participant_poster": (TOKEN, "GET", "token shown_stimulus"),
}
DELEGATED_NAMESPACES = {"admin", "api"}  # Django's admin (staff login), and tests/api


def site_routes(patterns=None, namespace: str = "") -> set[str]:
    names = set()
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or namespace
            if inner not in DELEGATED_NAMESPACES:
                names |= site_routes(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)
    return names


def test_the_matrix_names_every_route():
    assert site_routes() == set(ROUTES)


@pytest.fixture
def site(researcher, digits_zip_small):
    dataset = make_text_dataset()
    images = make_image_dataset(data=digits_zip_small)  # participants get stimulus files
    clips = make_video_dataset("matrix clips")  # and video clips have poster frames
    study = study_services.study_create(
        dataset=clips, name="Matrix study", kind="pairs", items=ItemPlan(),
        judgments_per_item=2, trials_per_session=3, created_by=researcher,
    )  # fmt: skip
    study_services.study_set_status(study=study, status="open")
    participant_client = Client()
    entry = participant_client.post(study.participant_url(), {"consent": "on"})
    participant = Participant.objects.get(study=study)
    assert entry["Location"] == participant.get_absolute_url()
    trial = study_services.trial_current(participant=participant)
    tags = study_services.study_create(
        dataset=images, name="Matrix tags", kind="tags", items=ItemPlan(mode="random", count=5),
        judgments_per_item=1, trials_per_session=2, created_by=researcher,
    )  # fmt: skip
    study_services.study_set_status(study=tags, status="open")
    return {
        "dataset": dataset,
        "target": dataset.targets.get(),
        "model": make_text_model(),
        "stimulus": clips.stimuli.first(),  # a file (and poster) the researcher may download
        "run": RunFactory(dataset=dataset),
        "embedding_import": EmbeddingImportFactory(dataset=dataset),
        "study": study,
        "pilot": Pilot.objects.create(study=study),
        "participant": participant,
        "tagger": study_services.participant_start(study=tags),
        "participant_client": participant_client,
        "shown_stimulus": trial.shown[0],
        "admin": AdminFactory(username="ada", password="ada-pass-123"),
        "viewer": UserFactory(username="vic", password="vic-pass-123"),
    }


def route_url(name: str, needs: str, site: dict) -> str:
    args: list[object] = []
    for need in needs.split():
        if need == "study_token":
            args.append(site["study"].token)
        elif need == "token":
            args.append(site["participant"].token)
        elif need == "tag_token":
            args.append(site["tagger"].token)
        elif need == "export":
            args += ["responses", "csv"]
        elif need == "figure":
            args += ["score-by-layer", "svg"]
        elif need == "shown_stimulus":
            args.append(site["shown_stimulus"])
        elif need == "step":
            args.append(0)  # a preview's first trial
        else:
            args.append(site[need].pk)
    return reverse(name, args=args)


def client_for(role: str, site: dict, researcher) -> Client:
    if role == "participant":
        return site["participant_client"]
    client = Client()
    if role in ("viewer", "admin"):
        client.force_login(site[role])
    elif role == "researcher":
        client.force_login(researcher)
    return client


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_its_pages(role, site, researcher):
    client = client_for(role, site, researcher)
    wrong = []
    for name, (access, method, needs) in sorted(ROUTES.items()):
        if name == "logout":
            continue  # would end the session the rest of the loop uses: below
        url = route_url(name, needs, site)
        response = client.post(url, {}) if method == "POST" else client.get(url)
        outcome = describe(response)
        allowed = access in (PUBLIC, TOKEN) or role in ("researcher", "admin")
        if allowed:
            ok = outcome in ("ok", "redirect", "invalid")
        elif role in ("anonymous", "participant"):
            ok = outcome == "login"
        else:
            ok = outcome == "forbidden"
        if not ok:
            wrong.append(f"{method} {url} ({name}): {outcome} {response.status_code}")
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


def describe(response) -> str:
    if response.status_code in (301, 302):
        return "login" if response["Location"].startswith(reverse("login")) else "redirect"
    if response.status_code == 403:
        return "forbidden"
    if response.status_code == 400:
        return "invalid"  # allowed in, refused the empty form: not a permission answer
    return "ok" if response.status_code == 200 else f"unexpected ({response.status_code})"


def test_a_participant_token_opens_only_its_own_trials(site):
    """Another participant's token is that participant's credential; a made-up one is 404,
    and a stimulus outside one's own trials is refused."""
    client = site["participant_client"]
    bogus = reverse("annotation:participant_trial", args=["not-a-token"])
    assert client.get(bogus).status_code == 404
    study: Study = site["study"]
    unseen = [s for s in study.dataset.stimuli.all() if not shown_to(site["participant"], s.pk)]
    for route in ("annotation:participant_stimulus", "annotation:participant_poster"):
        url = reverse(route, args=[site["participant"].token, unseen[0].pk])
        assert client.get(url).status_code == 403, route


def shown_to(participant: Participant, stimulus_id: int) -> bool:
    return any(stimulus_id in shown for shown in participant.trials.values_list("shown", flat=True))


def test_logout_is_a_post_and_ends_the_session(site):
    client = Client()
    client.force_login(site["viewer"])
    assert client.get(reverse("logout")).status_code == 405  # no logout by a crafted link
    assert client.post(reverse("logout")).status_code == 302
    assert "_auth_user_id" not in client.session
