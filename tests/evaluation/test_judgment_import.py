"""Importing published judgment files (pairs, triplets, 2AFC, matrices) as HumanJudgments:
real data from ../shared/data, every kind of bad file refused with nothing stored."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from evaluation.imports import judgments as judgment_import
from evaluation.imports.judgments import judgments_import
from evaluation.judgments import target_data
from evaluation.models import Dataset, HumanJudgments, Judgment, Stimulus, Target
from tests.conftest import SHARED_DATA, make_image_dataset, make_text_dataset
from tests.evaluation.test_human_targets import text_dataset

pytestmark = pytest.mark.django_db

THINGS = SHARED_DATA / "things_odd_one_out"


def csv_upload(header: Sequence[str], rows: Sequence[Sequence[object]], delimiter: str = ","):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return io.BytesIO(buffer.getvalue().encode("utf-8"))


def stored_counts() -> dict[str, int]:
    models = (Dataset, Stimulus, HumanJudgments, Judgment, Target)
    return {model.__name__: model.objects.count() for model in models}


def mean_rating(judgments: HumanJudgments, one: str, other: str) -> float:
    """The mean rating a run scores against, for the pair of texts (one, other)."""
    order = dict(judgments.dataset.stimuli.values_list("text", "order"))
    ratings = target_data(judgments.target).ratings
    pairs = {
        frozenset((int(i), int(j))): m
        for i, j, m in zip(ratings.i, ratings.j, ratings.mean, strict=True)
    }
    return float(pairs[frozenset((order[one], order[other]))])


def read_word_pairs(path) -> list[tuple[str, str, float]]:
    with open(path, encoding="utf-8") as handle:
        return [(a, b, float(v)) for a, b, v in (line.split() for line in handle)]


# --- Real data ---------------------------------------------------------------------------
def test_simlex_pairs_make_a_new_text_dataset_with_a_target(researcher):
    rows = read_word_pairs(SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt")
    upload = SimpleUploadedFile("simlex.tsv", csv_upload(["a", "b", "value"], rows, "\t").read())
    judgments = judgments_import(
        file=upload,
        format="pairs",
        name="SimLex-999",
        new_dataset_name="SimLex-999 words",
        create_missing=True,
        scale_min=0,
        scale_max=10,
        created_by=researcher,
    )
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    dataset = judgments.dataset
    assert (dataset.name, dataset.modality, dataset.created_by) == (
        "SimLex-999 words",
        "text",
        researcher,
    )
    assert list(dataset.stimuli.order_by("order").values_list("text", flat=True)) == words
    assert (judgments.kind, judgments.judgment_count, judgments.version) == ("pairs", 999, 1)
    assert (judgments.scale_min, judgments.scale_max) == (0, 10)
    assert judgments.origin == "pairs file simlex.tsv"
    # One mean rating per pair and no participants: the reliability says why there is no ceiling.
    assert judgments.ceiling is None
    assert "judged more than once; a split-half ceiling" in judgments.reliability["reason"]
    assert judgments.target.kind == "pairs"
    assert mean_rating(judgments, "old", "new") == pytest.approx(1.58)
    # SimLex lists (sly, strange) 1.97 and (strange, sly) 2.07: one unordered pair, two ratings.
    assert mean_rating(judgments, "sly", "strange") == pytest.approx(2.02)
    assert len(target_data(judgments.target).ratings.mean) == 998
    # Sorted references: the same words make the same content hash, so embeddings are shared.
    assert dataset.content_hash == text_dataset("SimLex words", words).content_hash


def test_men_3000_pairs_from_the_published_tab_separated_file():
    published = (SHARED_DATA / "men" / "EN-MEN-TR-3k.txt").read_bytes()
    judgments = judgments_import(
        file=io.BytesIO(b"a\tb\tvalue\n" + published),  # the published file has no header
        format="pairs",
        name="MEN",
        new_dataset_name="MEN words",
        create_missing=True,
        scale_min=0,
        scale_max=50,
    )
    rows = read_word_pairs(SHARED_DATA / "men" / "EN-MEN-TR-3k.txt")
    assert judgments.judgment_count == 3000 == judgments.rows.count()
    assert judgments.dataset.stimulus_count == len({w for a, b, _ in rows for w in (a, b)})
    assert mean_rating(judgments, "sun", "sunlight") == 50.0
    stored = judgments.rows.values_list("a__text", "b__text", "value")
    assert sorted(stored) == sorted(rows)


def things_dataset() -> tuple[Dataset, list[str]]:
    """The THINGS concepts as test_human_targets builds them (some words name two concepts)."""
    with open(THINGS / "item_names.tsv", encoding="utf-8") as handle:
        names = [line.split("\t")[0] for line in handle.read().splitlines()[1:]]
    words = [n.replace("_", " ") for n in names]
    return text_dataset("THINGS concepts", words), words


def things_triplets() -> np.ndarray:
    return np.loadtxt(THINGS / "test_triplets.csv", dtype=int)


def things_upload(triplets: np.ndarray, reference_of: Sequence[str]) -> io.BytesIO:
    """The published file as a triplets CSV: choice = the odd one out itself, not its position."""
    rows = [
        (*(reference_of[i - 1] for i in (a, b, c)), reference_of[(a, b, c)[pick - 1] - 1], who)
        for a, b, c, pick, who in triplets
    ]
    return csv_upload(["a", "b", "c", "choice", "participant"], rows)


def test_things_triplets_by_stimulus_id_reach_the_published_ceiling():
    dataset, words = things_dataset()
    ids = list(dataset.stimuli.order_by("order").values_list("pk", flat=True))
    triplets = things_triplets()
    judgments = judgments_import(
        file=things_upload(triplets, [str(pk) for pk in ids]),
        format="triplets",
        name="THINGS test triplets",
        dataset=dataset,
        match="id",
        allow_repeats=True,  # the noise-ceiling set asks some participants twice
    )
    assert judgments.ceiling == pytest.approx(0.6438, abs=1e-4)  # SOURCES.md: 64.38%
    assert (judgments.judgment_count, judgments.participant_count) == (20000, 325)
    # SOURCES.md: in (applesauce, bagel, laser_pointer) 20 of 21 picks are laser_pointer.
    trial = {words.index(w) for w in ("applesauce", "bagel", "laser pointer")}
    picks = [
        chosen
        for a, b, c, chosen in judgments.rows.values_list(
            "a__order", "b__order", "c__order", "chosen__text"
        )
        if {a, b, c} == trial
    ]
    assert (len(picks), picks.count("laser pointer")) == (21, 20)


def test_things_repeats_by_one_participant_are_refused_unless_allowed():
    dataset, _ = things_dataset()
    triplets = things_triplets()
    seen: dict[tuple[int, ...], int] = {}
    for position, (a, b, c, _, who) in enumerate(triplets):
        earlier = seen.setdefault((who, *sorted((a, b, c))), position)
        if earlier != position:
            break
    ids = [str(pk) for pk in dataset.stimuli.order_by("order").values_list("pk", flat=True)]
    before = stored_counts()
    with pytest.raises(ValidationError) as refused:
        judgments_import(
            file=things_upload(triplets, ids),
            format="triplets",
            name="T",
            dataset=dataset,
            match="id",
        )
    # Line numbers: the header is line 1, so the row at position p is on line p + 2.
    assert (
        f"Rows {earlier + 2} and {position + 2}: participant '{triplets[position, 4]}' judged the "
        "same item twice" in refused.value.message_dict["file"][0]
    )
    assert stored_counts() == before


def test_things_words_that_name_two_concepts_are_refused_as_ambiguous():
    dataset, words = things_dataset()
    before = stored_counts()
    with pytest.raises(ValidationError) as refused:
        judgments_import(
            file=things_upload(things_triplets(), words),
            format="triplets",
            name="T",
            dataset=dataset,
            match="text",
            allow_repeats=True,
        )
    message = refused.value.message_dict["file"][0]
    file_ids = [
        pk
        for pk, text in dataset.stimuli.order_by("order").values_list("pk", "text")
        if text == "file"
    ]
    assert message.startswith(
        "27 of the file's stimuli match more than one stimulus of THINGS concepts by text"
    )
    assert f"'file' (stimuli {file_ids[0]}, {file_ids[1]})" in message
    assert message.endswith("and 22 more. Name them by id to tell them apart.")
    assert stored_counts() == before


# --- Matrices and 2AFC on a small dataset ------------------------------------------------
SENTENCES = [
    "A cat sits on the mat.",
    "A dog runs in the park.",
    "Kittens play with yarn.",
    "Stocks fell sharply today.",
]
CAT, DOG, KITTENS, STOCKS = SENTENCES
PAIRS = ["a", "b", "value"]
TRIPLETS = ["a", "b", "c", "choice"]
TWO_AFC = ["reference", "first", "second", "choice"]


def matrix_upload(labels: Sequence[str], values: Sequence[Sequence[object]], delimiter=","):
    return csv_upload(
        ["", *labels], [[label, *row] for label, row in zip(labels, values, strict=True)], delimiter
    )


def test_a_square_matrix_becomes_one_rating_per_pair_matched_by_normalised_text():
    dataset = make_text_dataset()
    # Retyped: other case and spacing; matched by text after folding both.
    labels = [
        "a CAT sits on  the mat.",
        "A dog runs in the park.",
        "kittens play with yarn.",
        "Stocks fell sharply today. ",
    ]
    values = [[1, 0.6, 0.9, 0.1], [0.6, "", 0.5, 0.2], [0.9, 0.5, "n/a", 0.05], [0.1, 0.2, 0.05, 1]]
    judgments = judgments_import(
        file=matrix_upload(labels, values, ";"),
        format="matrix",
        name="sim",
        dataset=dataset,
        match="text",
    )
    assert (judgments.kind, judgments.judgment_count) == ("pairs", 6)
    stored = {
        (a, b): value for a, b, value in judgments.rows.values_list("a__text", "b__text", "value")
    }
    assert stored == {
        (SENTENCES[i], SENTENCES[j]): values[i][j] for i in range(4) for j in range(i + 1, 4)
    }


def test_an_asymmetric_matrix_is_refused_naming_the_worst_cell_or_averaged_on_request():
    dataset = make_text_dataset()
    values = [[0, 0.6, 0.9, 0.1], [0.5, 0, 0.5, 0.2], [0.9, 0.5, 0, 0.05], [0.4, 0.2, 0.05, 0]]
    before = stored_counts()
    with pytest.raises(ValidationError) as refused:
        judgments_import(
            file=matrix_upload(SENTENCES, values), format="matrix", name="m", dataset=dataset
        )
    assert (
        "The matrix is not symmetric (2 pairs differ); the largest difference: row "
        "'A cat sits on the mat.', column 'Stocks fell sharply today.' holds 0.1 but row "
        "'Stocks fell sharply today.', column 'A cat sits on the mat.' holds 0.4."
    ) in refused.value.message_dict["file"][0]
    assert stored_counts() == before
    judgments = judgments_import(
        file=matrix_upload(SENTENCES, values),
        format="matrix",
        name="m",
        dataset=dataset,
        symmetrize=True,
    )
    stored = dict(
        (frozenset((a, b)), v)
        for a, b, v in judgments.rows.values_list("a__text", "b__text", "value")
    )
    assert stored[frozenset((SENTENCES[0], SENTENCES[3]))] == pytest.approx(0.25)
    assert stored[frozenset((SENTENCES[0], SENTENCES[1]))] == pytest.approx(0.55)


def test_2afc_choices_name_a_candidate_and_match_by_name_or_id():
    dataset = make_text_dataset()
    ids = dict(dataset.stimuli.values_list("text", "pk"))
    cat, dog, kittens, stocks = SENTENCES
    rows = [
        (cat, kittens, dog, kittens, "p1"),
        (str(ids[cat]), stocks, kittens, kittens, "p2"),  # auto: an id and names in one file
        (stocks, cat, dog, dog, "p1"),
    ]
    judgments = judgments_import(
        file=csv_upload(["Reference", " First", "second ", "CHOICE", "participant"], rows),
        format="2afc",
        name="closer",
        dataset=dataset,
    )
    stored = list(
        judgments.rows.order_by("pk").values_list(
            "a__text", "b__text", "c__text", "chosen__text", "participant"
        )
    )
    assert stored == [
        (cat, kittens, dog, kittens, "p1"),
        (cat, stocks, kittens, kittens, "p2"),
        (stocks, cat, dog, dog, "p1"),
    ]
    assert (judgments.kind, judgments.participant_count, judgments.target.kind) == (
        "2afc",
        2,
        "2afc",
    )


def test_image_stimuli_match_by_their_name_its_last_part_or_their_stored_file(digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    first, second, third = dataset.stimuli.order_by("order")[:3]
    assert first.name.startswith("digits/0/")
    rows = [
        (first.name, PurePosixPath(second.name).name, 0.2),  # full name, last part
        (PurePosixPath(third.file.name).name, first.name, 0.7),  # stored file name
    ]
    judgments = judgments_import(
        file=csv_upload(PAIRS, rows), format="pairs", name="s", dataset=dataset, match="name"
    )
    assert list(judgments.rows.order_by("pk").values_list("a", "b", "value")) == [
        (first.pk, second.pk, 0.2),
        (third.pk, first.pk, 0.7),
    ]
    with pytest.raises(ValidationError, match="which have no text; match them by id or name"):
        judgments_import(
            file=csv_upload(PAIRS, rows), format="pairs", name="s", dataset=dataset, match="text"
        )


def test_a_second_import_under_the_same_name_is_a_new_version():
    dataset = make_text_dataset()
    rows = [(SENTENCES[0], SENTENCES[1], 3), (SENTENCES[1], SENTENCES[2], 4)]
    first = judgments_import(
        file=csv_upload(["a", "b", "value"], rows), format="pairs", name="s", dataset=dataset
    )
    second = judgments_import(
        file=csv_upload(["a", "b", "value"], rows[:1]), format="pairs", name="s", dataset=dataset
    )
    assert (first.version, second.version, second.judgment_count) == (1, 2, 1)


# --- Bad input: a specific message, and nothing stored ----------------------------------
ON_A_SCALE = {"scale_min": 1, "scale_max": 7}


def bad_files() -> Iterator[tuple[str, str, io.BytesIO, dict[str, object], str]]:
    """(case, format, file, other arguments, message) for files that must be refused."""
    yield "empty", "pairs", io.BytesIO(b" \n"), {}, "The CSV file is empty."
    yield "header only", "pairs", csv_upload(PAIRS, []), {}, "The file has a header but no rows."
    yield (
        "missing column",
        "pairs",
        csv_upload(["a", "b", "score"], [(CAT, DOG, 1)]),
        {},
        "The file has no 'value' column; a pairs file needs columns a, b, value (and optionally "
        "participant). Its first line, read as the header, holds: 'a', 'b', 'score'.",
    )
    yield (
        "no header",
        "pairs",
        io.BytesIO(b"old\tnew\t1.58\nsmart\tintelligent\t9.2\n"),
        {},
        "The file has no 'a', 'b', 'value' column",
    )
    yield (
        "not a number",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, 1), (CAT, KITTENS, "high")]),
        {},
        "Row 3: the value 'high' is not a number.",
    )
    yield (
        "nan",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, "nan")]),
        {},
        "Row 2: the value 'nan' is not a finite number.",
    )
    yield (
        "infinite",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, "-inf")]),
        {},
        "Row 2: the value '-inf' is not a finite number.",
    )
    yield (
        "empty cell",
        "pairs",
        csv_upload(PAIRS, [(CAT, "", 1)]),
        {},
        "Row 2: the column 'b' is empty.",
    )
    yield (
        "short row",
        "pairs",
        io.BytesIO(f"a,b,value\n{CAT},{DOG}\n".encode()),
        {},
        "Row 2: the column 'value' is empty.",
    )
    yield (
        "long row",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, 1, 2)]),
        {},
        "Row 2 has more fields than the header.",
    )
    yield (
        "not utf-8",
        "pairs",
        io.BytesIO("a,b,value\ncafé,thé,1\n".encode("latin-1")),
        {},
        "The CSV is not UTF-8 text",
    )
    yield (
        "same participant twice",
        "pairs",
        csv_upload(
            [*PAIRS, "participant"],
            [
                (CAT, DOG, 1, "p1"),
                (CAT, DOG, 2, "p2"),
                (KITTENS, DOG, 2, "p1"),
                (DOG, CAT, 3, "p1"),
            ],
        ),
        {},
        "Rows 2 and 5: participant 'p1' judged the same item twice.",
    )
    yield (
        "unknown stimuli",
        "pairs",
        csv_upload(PAIRS, [(CAT, f"unknown {k}", 1) for k in range(7)]),
        {},
        "7 of the file's 8 stimuli match no stimulus of sentences by id, name or text: "
        "'unknown 0', 'unknown 1', 'unknown 2', 'unknown 3', 'unknown 4' and 2 more.",
    )
    yield (
        "ambiguous text",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, 1)]),
        {"dataset": "with a repeated text"},
        f"1 of the file's stimuli match more than one stimulus of repeats by id, name or text: "
        f"'{CAT}' (stimuli",
    )
    yield (
        "one stimulus written two ways",
        "pairs",
        csv_upload(PAIRS, [(CAT, CAT.upper(), 9)]),
        {},
        f"Row 2: '{CAT}' and '{CAT.upper()}' are the same stimulus of the dataset",
    )
    yield (
        "off the scale",
        "pairs",
        csv_upload(PAIRS, [(CAT, DOG, 7), (CAT, KITTENS, 7.5)]),
        ON_A_SCALE,
        "Row 3: the rating 7.5 is above the scale's maximum 7.",
    )
    yield (
        "choice not in the trial",
        "triplets",
        csv_upload(TRIPLETS, [(CAT, DOG, KITTENS, STOCKS)]),
        {},
        f"Row 2: the choice '{STOCKS}' is not one of the trial's options "
        f"('{CAT}', '{DOG}', '{KITTENS}').",
    )
    yield (
        "choice as a position",
        "triplets",
        csv_upload(TRIPLETS, [(CAT, DOG, KITTENS, 3)]),
        {},
        "The choice names the chosen stimulus itself, not its position.",
    )
    yield (
        "repeated stimulus in a triplet",
        "triplets",
        csv_upload(TRIPLETS, [(CAT, DOG, CAT, DOG)]),
        {},
        f"Row 2: '{CAT}' appears twice in the trial; a trial's stimuli must differ.",
    )
    yield (
        "2afc choice is the reference",
        "2afc",
        csv_upload(TWO_AFC, [(CAT, DOG, KITTENS, CAT)]),
        {},
        f"Row 2: the choice '{CAT}' is the reference; it must be the first or the second stimulus.",
    )
    yield (
        "matrix not square",
        "matrix",
        csv_upload(["", CAT, DOG], [(CAT, 0, 1)]),
        {},
        "The matrix names 2 stimuli in its header but has 1 rows below it; it must be square.",
    )
    yield (
        "matrix rows out of order",
        "matrix",
        csv_upload(["", CAT, DOG], [(DOG, 0, 1), (CAT, 1, 0)]),
        {},
        f"Row 2 starts with '{DOG}', but stimulus 1 of the header is '{CAT}'",
    )
    yield (
        "matrix header repeats a stimulus",
        "matrix",
        csv_upload(["", CAT, DOG, CAT], [(CAT, 0, 1, 1), (DOG, 1, 0, 1), (CAT, 1, 1, 0)]),
        {},
        f"Row 1: the header names '{CAT}' twice (cells 2 and 4).",
    )
    yield (
        "matrix cell not a number",
        "matrix",
        csv_upload(["", CAT, DOG], [(CAT, 0, "x"), (DOG, "x", 0)]),
        {},
        f"Row 2: the cell under '{DOG}' 'x' is not a number.",
    )


@pytest.mark.parametrize(
    ("case", "format", "file", "arguments", "message"),
    list(bad_files()),
    ids=[case for case, *_ in bad_files()],
)
def test_a_bad_file_is_refused_with_a_specific_message_and_nothing_stored(
    case, format, file, arguments, message
):
    dataset = make_text_dataset()
    if arguments.get("dataset"):
        rows = [(t, "x") for t in [*SENTENCES, CAT]]
        arguments = {**arguments, "dataset": make_text_dataset("repeats", rows=rows)}
    before = stored_counts()
    with pytest.raises(ValidationError) as refused:
        judgments_import(file=file, format=format, name="bad", **{"dataset": dataset, **arguments})
    assert message in refused.value.message_dict["file"][0]
    assert stored_counts() == before


def test_a_bad_file_for_a_new_dataset_creates_no_dataset():
    before = stored_counts()
    with pytest.raises(ValidationError, match="Row 3: the value 'high' is not a number"):
        judgments_import(
            file=csv_upload(PAIRS, [("cat", "dog", 1), ("cat", "kitten", "high")]),
            format="pairs",
            name="words",
            new_dataset_name="words",
            create_missing=True,
        )
    assert stored_counts() == before


def test_a_failure_while_storing_also_undoes_the_new_dataset(monkeypatch):
    def fail(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(judgment_import, "judgments_create", fail)
    before = stored_counts()
    with pytest.raises(RuntimeError):
        judgments_import(
            file=csv_upload(PAIRS, [("cat", "dog", 1)]),
            format="pairs",
            name="words",
            new_dataset_name="words",
            create_missing=True,
        )
    assert stored_counts() == before


def bad_arguments() -> Iterator[tuple[dict[str, object], str, str]]:
    """(arguments beside a good pairs file, field, message) that must be refused."""
    yield {"format": "quadruplets"}, "format", "Unknown format 'quadruplets'"
    yield {"match": "fuzzy"}, "match", "Unknown match rule 'fuzzy'"
    yield {"name": " "}, "name", "Give the judgments a name"
    yield {"dataset": None}, "dataset", "Choose an existing dataset, or name a new text dataset"
    yield {"new_dataset_name": "more"}, "dataset", "not both"
    yield {"create_missing": True}, "create_missing", "never added to an existing dataset"
    yield (
        {"dataset": None, "new_dataset_name": "words"},
        "create_missing",
        "confirm that with create_missing",
    )
    yield (
        {"dataset": None, "new_dataset_name": "sentences", "create_missing": True},
        "new_dataset_name",
        "A dataset called 'sentences' already exists.",
    )
    yield (
        {"dataset": None, "new_dataset_name": "words", "create_missing": True, "match": "id"},
        "match",
        "Matching applies to an existing dataset",
    )
    yield {"format": "triplets", "scale_min": 0}, "scale_min", "pair ratings only"
    yield {"scale_min": 5, "scale_max": 1}, "scale_max", "must exceed its minimum"
    yield {"symmetrize": True}, "symmetrize", "matrix format only"


@pytest.mark.parametrize(("arguments", "field", "message"), list(bad_arguments()))
def test_bad_arguments_are_refused_by_name(arguments, field, message):
    dataset = make_text_dataset()
    before = stored_counts()
    with pytest.raises(ValidationError) as refused:
        judgments_import(
            **{
                "file": csv_upload(PAIRS, [(CAT, DOG, 1)]),
                "format": "pairs",
                "name": "s",
                "dataset": dataset,
                **arguments,
            }
        )
    assert message in refused.value.message_dict[field][0]
    assert stored_counts() == before


def test_the_import_page_creates_a_target_from_an_upload(researcher_client):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    data = b"a,b,value\ncat,dog,7\ncat,car,1\ndog,car,2\n"
    response = researcher_client.post(
        reverse("evaluation:judgments_import"),
        {
            "name": "toy ratings",
            "format": "pairs",
            "file": SimpleUploadedFile("toy.csv", data, content_type="text/csv"),
            "match": "auto",
            "new_dataset_name": "toy words",
            "scale_min": 0,
            "scale_max": 10,
        },
    )
    assert response.status_code == 302, response.content.decode()[-1500:]
    judgments = HumanJudgments.objects.get(name="toy ratings")
    assert judgments.judgment_count == 3 and judgments.dataset.name == "toy words"
    refused = researcher_client.post(
        reverse("evaluation:judgments_import"),
        {
            "name": "again",
            "format": "pairs",
            "file": SimpleUploadedFile("toy.csv", b"a,b\nx,y\n"),
            "match": "auto",
            "new_dataset_name": "other words",
        },
    )
    assert refused.status_code == 200 and "value" in refused.content.decode()
    assert not HumanJudgments.objects.filter(name="again").exists()
