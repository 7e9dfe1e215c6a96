"""Hostile query strings on every HTML page: never a server error.

The API has schemathesis (tests/api/test_fuzz.py); the HTML pages have no schema, so this
walks a table: every page, every query parameter it reads, and values chosen to break
parsers (400 nines, -1, 1e309, NaN, blank, other scripts' digits, NUL bytes, 10,000
characters, repeated and array-style parameters, undecodable bytes), then lets hypothesis
mix parameters and free text. A page may refuse (4xx) or fall back to its defaults; it may
not answer 5xx. Public pages are fetched anonymously, researcher pages as a researcher.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from annotation import services as study_services
from annotation.services import ItemPlan
from evaluation.models import Target
from tests.conftest import make_text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(300)]

HOSTILE = [
    "9" * 400,
    "-" + "9" * 400,
    "9" * 5000,  # past Python's int() digit limit
    "9" * 400 + ".5",
    "-1",
    "0",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "-inf",
    "Infinity",
    "",
    " ",
    "1.5",
    "0x10",
    "1_000",
    "²",  # isdigit() but not a number
    "٣",  # Arabic-Indic three
    "\uff11",  # fullwidth one
    "\x00",
    "1\x00",
    "a\x00b",
    "x" * 10_000,
    "😀" * 100,
    "é\u202e\u200b",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%",
    "csv",
    "all",
    "asc",
]
# Raw query strings the test client would otherwise encode politely.
RAW = [
    "{p}=%FF%FE",  # not UTF-8
    "{p}=%00",
    "{p}[]=1&{p}[]=2",
    "{p}[0]=1",
    "{p}=1&{p}=" + "9" * 400,
    "{p}=" + "9" * 400 + "&{p}=1",
    "{p}",
    "{p}==",
    "&&&=&{p}=&",
    "{p}=%2",
]


@pytest.fixture
def site(researcher) -> dict[str, str]:
    """A catalogue with a scored target, an open pair study with a participant, an open tag
    study with a participant; returns the paths of their pages."""
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    models = []
    for index, params in enumerate((5_000_000, 300_000_000, None)):
        model = PretrainedModelFactory(
            name=f"net-{index}", identifier=f"net{index}", parameter_count=params
        )
        models.append(model)
        ScoreFactory(
            run=run, model=model, target=target, value=0.5 + index / 10, ci_low=0.4, ci_high=0.9,
            n=8,
        )  # fmt: skip
    studies = {}
    for kind in ("pairs", "tags"):
        study = study_services.study_create(
            dataset=make_text_dataset(name=f"sentences for {kind}"),
            name=f"{kind} study",
            kind=kind,
            items=ItemPlan(),
            judgments_per_item=2,
            trials_per_session=4,
            created_by=researcher,
        )
        study_services.study_set_status(study=study, status="open")
        participant = study_services.participant_start(study=study, external_id=f"P-{kind}")
        studies[kind] = (study, participant)
    pair_study, pair_participant = studies["pairs"]
    _, tag_participant = studies["tags"]
    shown = study_services.trial_current(participant=pair_participant).shown
    return {
        "target": str(target.pk),
        "model": str(models[0].pk),
        "model_2": str(models[1].pk),
        "dataset": str(dataset.pk),
        "run": str(run.pk),
        "study": str(pair_study.pk),
        "study_token": pair_study.token,
        "participant": pair_participant.token,
        "tag_participant": tag_participant.token,
        "stimulus": str(shown[0]),
    }


BOARD_PARAMS = (
    "sort order layers modality source min_params max_params q page per_page format".split()
)
# Every page anyone may open, and the query parameters it reads (plus one it does not).
PUBLIC: list[tuple[str, list[str]]] = [
    ("/", []),
    ("/leaderboards/", []),
    ("/leaderboards/{target}/", BOARD_PARAMS),
    ("/leaderboards/overall/", ["format"]),
    ("/accounts/login/", ["next"]),
    ("/s/{study_token}/", ["PROLIFIC_PID"]),
    ("/p/{participant}/", []),
    ("/p/{participant}/done/", []),
    ("/p/{tag_participant}/tags/", ["q"]),
    ("/p/{participant}/stimuli/{stimulus}/", []),
]


def public_pages(with_params_only: bool = False) -> list[Any]:
    return [
        pytest.param(pattern, params, id=pattern)
        for pattern, params in PUBLIC
        if params or not with_params_only
    ]


RESEARCHER: list[tuple[str, list[str]]] = [
    ("/compare/", ["target", "models", "layer_{model}", "order", "stimulus"]),
    ("/models/", []),
    ("/models/new/", []),
    ("/models/{model}/", ["efficiency"]),
    ("/datasets/", []),
    ("/datasets/new/", []),
    ("/datasets/{dataset}/", []),
    ("/judgments/import/", []),
    ("/runs/", []),
    ("/runs/new/", ["dataset"]),
    ("/runs/{run}/", []),
    ("/studies/", []),
    ("/studies/new/", []),
    ("/studies/{study}/", ["target"]),
]
UNREAD = "utm_source"  # a parameter no page reads: ignored everywhere


def failures(
    client: Client, pages: list[tuple[str, list[str]]], site: dict[str, str], base: str = ""
) -> list[str]:
    """Every (page, query) that answered a server error, as 'status GET url'."""
    found = []

    def get(path: str, query: str, **headers: str) -> None:
        response = client.get(f"{path}?{query}", headers=headers)
        if response.status_code >= 500:
            found.append(f"{response.status_code} GET {path}?{query[:80]}")

    for pattern, params in pages:
        path = pattern.format(**site)
        for param in [*(p.format(**site) for p in params), UNREAD]:
            fixed = f"{base}&" if base else ""
            for value in HOSTILE:
                get(path, fixed + urlencode({param: value}))
            for raw in RAW:
                get(path, fixed + raw.format(p=quote(param)))
            get(path, fixed + urlencode({param: "9" * 400}), HX_Request="true")
    return found


@pytest.mark.parametrize(("pattern", "params"), public_pages())
def test_public_pages_never_answer_a_server_error_to_a_hostile_query(client, site, pattern, params):
    client.raise_request_exception = False
    found = failures(client, [(pattern, params)], site)
    assert not found, "\n".join(found)


def test_public_pages_with_hostile_values_beside_real_ones(client, site):
    """The leaderboard's CSV export and a filtered board read every parameter too."""
    client.raise_request_exception = False
    board = [p for p in PUBLIC if p[0] == "/leaderboards/{target}/"]
    assert not (found := failures(client, board, site, base="format=csv")), "\n".join(found)
    assert not (
        found := failures(client, board, site, base="per_page=all&layers=all&sort=knn(k%3D5)")
    ), "\n".join(found)


def test_researcher_pages_never_answer_a_server_error_to_a_hostile_query(researcher_client, site):
    researcher_client.raise_request_exception = False
    assert not (found := failures(researcher_client, RESEARCHER, site)), "\n".join(found)
    compare = [("/compare/", ["layer_{model}", "layer_{model_2}", "order", "stimulus"])]
    two_models = f"target={site['target']}&models={site['model']}&models={site['model_2']}"
    assert not (found := failures(researcher_client, compare, site, base=two_models)), "\n".join(
        found
    )


def query_strategy(params: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = st.sampled_from([*params, UNREAD, "page[]", ""])
    values = st.one_of(
        st.sampled_from(HOSTILE),
        st.text(max_size=50),
        st.integers().map(str),
        st.floats().map(str),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
    )
    return st.lists(st.tuples(names, values), max_size=8)


@pytest.mark.parametrize(("pattern", "params"), public_pages(with_params_only=True))
def test_public_pages_survive_generated_queries(client, site, pattern, params):
    client.raise_request_exception = False
    path = pattern.format(**site)
    errors: list[str] = []

    @given(query=query_strategy(params), htmx=st.booleans())
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        derandomize=True,  # the same queries on every run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(query: list[tuple[str, str]], htmx: bool) -> None:
        encoded = urlencode(query)
        headers = {"HX_Request": "true"} if htmx else {}
        response = client.get(f"{path}?{encoded}", headers=headers)
        if response.status_code >= 500:
            errors.append(f"{response.status_code} GET {path}?{encoded[:120]}")

    check()
    assert not errors, "\n".join(errors)


# The API's list filters (api/filters.py) and pagination (api/pagination.py), with the same
# values: schemathesis draws from the schema, which says "integer"; these are not.
API_LISTS: list[tuple[str, list[str]]] = [
    ("/api/models/", ["source", "modality", "name"]),
    ("/api/datasets/", ["modality", "name"]),
    ("/api/datasets/{dataset}/stimuli/", ["label", "split"]),
    ("/api/runs/", ["status", "dataset"]),
    ("/api/targets/", ["kind", "dataset"]),
    ("/api/scores/", ["model", "target", "dataset", "run", "metric", "metric_key", "layer"]),
    ("/api/studies/", ["kind", "status", "dataset"]),
    ("/api/judgments/", ["dataset", "kind", "name"]),
]


def test_api_list_filters_refuse_hostile_values_with_a_4xx(researcher_client, site):
    researcher_client.raise_request_exception = False
    pages = [(path, [*params, "page", "page_size"]) for path, params in API_LISTS]
    found = failures(researcher_client, pages, site)
    assert not found, "\n".join(found)
