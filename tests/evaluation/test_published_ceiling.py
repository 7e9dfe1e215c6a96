"""Boards without a ceiling say why, from the judgments; researchers may enter a ceiling
published elsewhere with its source, drawn apart from a computed one."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.leaderboards import target_ceilings
from evaluation.models import Target
from tests.conftest import SHARED_DATA, make_text_dataset
from tests.evaluation.test_human_targets import text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def simlex() -> Target:
    """SimLex-999 as published: one mean rating per pair (one pair listed twice)."""
    with open(SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt", encoding="utf-8") as handle:
        rows = [line.split() for line in handle]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    dataset = text_dataset("SimLex words", words)
    judgments = judgments_create(
        dataset=dataset,
        name="SimLex-999",
        kind="pairs",
        scale_min=0,
        scale_max=10,
        rows=[JudgmentRow((index[a], index[b]), value=float(v)) for a, b, v in rows],
        allow_repeats=True,
    )
    target = Target.objects.get(judgments=judgments)
    model = PretrainedModelFactory(name="minilm", modality="text")
    ScoreFactory(
        run=RunFactory(dataset=dataset),
        model=model,
        target=target,
        metric_key="pair_alignment(correlation=spearman)",
        value=0.445,
        ceiling=None,
    )
    return target


def test_simlex_gives_no_ceiling_and_the_board_says_why(client, simlex):
    ceilings = target_ceilings(simlex)
    assert ceilings is not None and ceilings.computed is None
    assert ceilings.reason.startswith("only 1 of 998 pairs was judged more than once;")
    page = client.get(simlex.get_absolute_url()).content.decode()
    assert "No ceiling is computed from these judgments: only 1 of 998 pairs was judged" in page
    assert 'id="published-ceiling"' not in page  # the form is for researchers only
    front = client.get(reverse("evaluation:leaderboards")).content.decode()
    assert "no ceiling from these judgments: only 1 of 998 pairs was judged more than once" in front


def test_choice_data_answered_once_says_so():
    dataset = make_text_dataset()
    judgments = judgments_create(
        dataset=dataset,
        name="once each",
        kind="triplets",
        rows=[JudgmentRow((0, 1, 2), chosen=0), JudgmentRow((1, 2, 3), chosen=3)],
    )
    ceilings = target_ceilings(Target.objects.get(judgments=judgments))
    assert ceilings is not None and ceilings.computed is None
    assert ceilings.reason.startswith("only 0 of 2 triplets were answered more than once;")


def test_the_reason_is_read_from_the_stored_reliability_not_the_rows(simlex):
    """A board's notice must not stream a large set's rows: pair ratings store their reason
    when imported; the rows themselves are not read again."""
    from django.core.cache import cache

    from evaluation.leaderboards import no_ceiling_reasons
    from evaluation.models import Judgment

    judgments = simlex.judgments
    cache.delete(f"no-ceiling-reason:v2:{judgments.pk}")
    Judgment.objects.filter(judgments=judgments).delete()  # what is said comes from elsewhere
    reason = no_ceiling_reasons([judgments])[judgments.pk]
    assert reason.startswith("only 1 of 998 pairs was judged more than once;")


def post_ceiling(client: Client, target: Target, **data: str):
    return client.post(reverse("evaluation:leaderboard_published_ceiling", args=[target.pk]), data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"value": "1.5", "source": "Hill et al."}, "lies above 0 (chance) and at most 1"),
        ({"value": "-0.2", "source": "Hill et al."}, "-0.2 is not."),
        ({"value": "0", "source": "Hill et al."}, "0 is not."),
        ({"value": "nan", "source": "Hill et al."}, "Published ceiling:"),
        ({"value": "0.67", "source": "   "}, "Say where the published ceiling comes from"),
        ({"value": "", "source": "Hill et al."}, "Published ceiling: This field is required."),
    ],
)
def test_a_bad_published_ceiling_is_refused_with_the_reason(
    researcher_client, simlex, data, message
):
    response = post_ceiling(researcher_client, simlex, **data)
    assert response.status_code == 400
    page = response.content.decode()
    assert "The ceiling was not saved:" in page and message in page
    simlex.refresh_from_db()
    assert simlex.published_ceiling is None


def test_published_ceiling_is_drawn_apart_from_a_computed_one(researcher_client, simlex):
    page = researcher_client.get(simlex.get_absolute_url()).content.decode()
    assert 'id="published-ceiling"' in page and "enter it with its source" in page
    response = post_ceiling(
        researcher_client, simlex, value="0.67", source="Hill et al. 2015, inter-rater agreement"
    )
    assert response.status_code == 302
    simlex.refresh_from_db()
    assert simlex.published_ceiling == 0.67
    page = researcher_client.get(simlex.get_absolute_url()).content.decode()
    row = page[page.index('id="ceiling-published"') :]
    row = row[: row.index("</tr>")]
    assert "published (Hill et al. 2015, inter-rater agreement)" in row and "0.670" in row
    assert 'id="ceiling-computed"' not in page  # none was computed: never drawn as one
    assert "0.664 of published ceiling" in page  # 0.445 / 0.67
    front = researcher_client.get(reverse("evaluation:leaderboards")).content.decode()
    assert "published ceiling 0.670 (Hill et al. 2015, inter-rater agreement)" in front
    export = researcher_client.get(simlex.get_absolute_url(), {"format": "csv"})
    header, row = list(csv.reader(io.StringIO(export.content.decode())))
    assert row[header.index("published ceiling")] == "0.67"
    assert row[header.index("published ceiling source")].startswith("Hill et al. 2015")
    assert row[header.index("pair_alignment(correlation=spearman) ceiling")] == ""  # none computed
    removed = researcher_client.post(
        reverse("evaluation:leaderboard_published_ceiling", args=[simlex.pk]), {"remove": "1"}
    )
    assert removed.status_code == 302
    simlex.refresh_from_db()
    assert simlex.published_ceiling is None and simlex.published_ceiling_source == ""
    assert (
        'id="ceiling-published"'
        not in researcher_client.get(simlex.get_absolute_url()).content.decode()
    )


def test_only_researchers_with_a_csrf_token_may_publish(client, outsider, researcher, simlex):
    url = reverse("evaluation:leaderboard_published_ceiling", args=[simlex.pk])
    data = {"value": "0.6", "source": "a paper"}
    assert client.post(url, data).status_code == 302  # to the login page
    client.force_login(outsider)
    assert client.post(url, data).status_code == 403
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(researcher)
    assert strict.post(url, data).status_code == 403  # no CSRF token
    simlex.refresh_from_db()
    assert simlex.published_ceiling is None
    labels = Target.objects.get(dataset=make_text_dataset(), kind="labels")
    client.force_login(researcher)
    response = post_ceiling(client, labels, value="0.6", source="a paper")
    assert response.status_code == 302
    labels.refresh_from_db()
    assert labels.published_ceiling is None


@pytest.mark.parametrize(
    ("metric", "value", "problem"),
    [
        ("odd_one_out", 0.30, "lies above 1/3 (chance) and at most 1"),
        ("odd_one_out", 1 / 3, "lies above 1/3 (chance)"),
        ("odd_one_out", 0.5, ""),
        ("two_afc", 0.45, "lies above 0.5 (chance) and at most 1"),
        ("two_afc", 0.9, ""),
        ("pair_alignment", 0.01, ""),
    ],
)
def test_a_published_ceiling_lies_above_chance(metric, value, problem):
    """A ceiling at or below chance would put every model above people: refused."""
    from evaluation.metrics import ceiling_check

    found = ceiling_check(metric, value)
    assert (problem in found) if problem else found == ""
    assert bool(found) == bool(problem)
