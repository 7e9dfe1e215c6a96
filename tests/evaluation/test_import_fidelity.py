"""Published judgment files import as published (issue 18): rows that pair a text with
itself are judgments, the CSV dialect comes from the file's name and first line (never from
guessing quotes in a prefix), and pair ratings are scored per pair or per row as chosen."""

from __future__ import annotations

import csv
import io
import random
import re

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from scipy.stats import pearsonr, spearmanr

from evaluation import services
from evaluation.imports.judgment_files import ColumnMap, column_map_from, parse_columns
from evaluation.imports.judgments import judgments_import, report_lines
from evaluation.imports.reading import csv_dialect
from evaluation.judgments import target_data
from evaluation.metrics import pair_alignment_entry
from evaluation.models import HumanJudgments, Score
from tests.conftest import SENTENCES, SHARED_DATA, make_text_model
from tests.evaluation.test_human_targets import minilm, read_stsb  # noqa: F401 (fixture)
from tests.evaluation.test_judgment_import import csv_upload, stored_counts
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db

CAT, DOG, KITTENS, STOCKS = (text for text, _ in SENTENCES[:4])


def upload(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode("utf-8"))


def import_pairs(file, **options) -> HumanJudgments:
    return judgments_import(
        file=file, format="pairs", name=options.pop("name", "sts"),
        new_dataset_name=options.pop("new_dataset_name", "sentences"), create_missing=True,
        **options,
    )  # fmt: skip


# --- Pairs of a text with itself -----------------------------------------------------------
SELF_ROWS = [(CAT, DOG, 1.0), (DOG, DOG, 5.0), (CAT, KITTENS, 3.5), (STOCKS, STOCKS, 4.5),
             (KITTENS, DOG, 0.5), (STOCKS, CAT, 0.2)]  # fmt: skip


def test_identical_text_rows_are_kept_counted_and_scored_as_self_similarity():
    judgments = import_pairs(csv_upload(["a", "b", "value"], SELF_ROWS))
    assert judgments.judgment_count == 6
    assert judgments.import_report["self_pairs"] == "keep"
    assert judgments.import_report["self_pairs_kept"] == 2
    assert judgments.import_report["self_pairs_dropped"] == 0
    pairs = target_data(judgments.target).ratings
    assert pairs.self_pairs == 2
    assert any(
        "2 row(s) pair a stimulus with itself: kept" in line for line in report_lines(judgments)
    )


def test_identical_text_rows_are_dropped_on_request_and_that_is_recorded():
    judgments = import_pairs(csv_upload(["a", "b", "value"], SELF_ROWS), self_pairs="drop")
    assert judgments.judgment_count == 4
    assert judgments.import_report["self_pairs_dropped"] == 2
    assert judgments.import_report["self_pairs_kept"] == 0
    assert target_data(judgments.target).ratings.self_pairs == 0
    assert "2 row(s) pairing a stimulus with itself dropped, as asked." in report_lines(judgments)


def test_a_file_of_nothing_but_dropped_self_pairs_stores_nothing():
    before = stored_counts()
    with pytest.raises(ValidationError, match="All 2 rows pair a stimulus with itself"):
        import_pairs(csv_upload(["a", "b", "value"], [(DOG, DOG, 5), (CAT, CAT, 5)]),
                     self_pairs="drop")  # fmt: skip
    assert stored_counts() == before


def test_a_triplet_naming_one_stimulus_twice_is_still_refused():
    with pytest.raises(ValidationError, match=f"Row 2: '{DOG}' appears twice in the trial"):
        judgments_import(
            file=csv_upload(["a", "b", "c", "choice"], [(DOG, DOG, CAT, CAT)]),
            format="triplets", name="t", new_dataset_name="s", create_missing=True,
        )  # fmt: skip


# --- The CSV dialect -------------------------------------------------------------------------
def words(count: int) -> list[str]:
    rng = random.Random(4)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(8)) for _ in range(count)})


def test_a_csv_whose_first_escaped_quote_is_past_64_kib_is_read_as_rfc_4180():
    vocabulary = words(300)
    rng = random.Random(7)
    rows = [
        (rng.choice(vocabulary), rng.choice(vocabulary), rng.randint(0, 10)) for _ in range(70_000)
    ]
    quoted = 'he said "stop, now"'  # a comma and quotes: csv.writer quotes it, doubling quotes
    rows[60_000] = (quoted, vocabulary[0], 7)
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # what Python writes: RFC 4180
    writer.writerow(["a", "b", "value"])
    writer.writerows(rows)
    text = buffer.getvalue()
    assert text.index('""') > 64 * 1024  # the first escaped quote is past the old sniffing
    judgments = import_pairs(upload("pairs.csv", text))
    assert judgments.judgment_count == 70_000
    assert judgments.import_report["read_as"] == (
        "comma-separated, RFC 4180 quoting (from the .csv extension)"
    )
    assert judgments.dataset.stimuli.filter(text=quoted).exists()


def test_a_tsv_with_bare_quotes_is_read_without_quote_processing():
    rows = [('A "quoted" word', "plain", 1.0), ('"starts quoted', 'ends quoted"', 2.0),
            ("x", 'say "hi" twice "now"', 3.0)]  # fmt: skip
    text = "a\tb\tvalue\n" + "".join(f"{a}\t{b}\t{v}\n" for a, b, v in rows)
    judgments = import_pairs(upload("pairs.tsv", text))
    texts = set(judgments.dataset.stimuli.values_list("text", flat=True))
    assert {'A "quoted" word', '"starts quoted', 'ends quoted"', 'say "hi" twice "now"'} <= texts
    assert judgments.import_report["read_as"] == (
        "tab-separated, no quote processing (from the .tsv extension)"
    )


@pytest.mark.parametrize(
    ("name", "first_line", "expected"),
    [
        ("x.csv", "a,b,value", "comma-separated, RFC 4180 quoting (from the .csv extension)"),
        ("x.csv", "a;b;value", "semicolon-separated, RFC 4180 quoting (a .csv whose first line has no comma but semicolons)"),
        ("x.TAB", "a\tb\tvalue", "tab-separated, no quote processing (from the .tab extension)"),
        ("x.txt", "a\tb\tvalue", "tab-separated, no quote processing (delimiter from the first line)"),
        ("", 'a;"b,c";value', "semicolon-separated, RFC 4180 quoting (delimiter from the first line)"),
        ("", "text", "comma-separated, RFC 4180 quoting (one column: no delimiter in the first line)"),
    ],
)  # fmt: skip
def test_the_dialect_comes_from_the_name_and_the_first_line(name, first_line, expected):
    assert str(csv_dialect(name, first_line)) == expected


def test_a_malformed_row_names_its_line_and_the_likely_cause():
    text = 'a,b,value\ncat,dog,1\n"the cat" sat,dog,2\n'
    with pytest.raises(ValidationError) as caught:
        import_pairs(upload("pairs.csv", text))
    message = " ".join(caught.value.messages)
    assert "near row 3" in message
    assert "Likely a field holds a comma or a quote without being quoted" in message
    assert "read as comma-separated, RFC 4180 quoting" in message


def test_a_text_dataset_csv_is_read_by_the_same_rules():
    from evaluation.imports.stimuli import dataset_import_texts

    rows = ["text"] + [f"sentence {k}" for k in range(5000)] + ['"a ""quoted"", text"']
    dataset = dataset_import_texts(name="t", upload=upload("t.csv", "\n".join(rows) + "\n"),
                                   label_column="")  # fmt: skip
    assert dataset.stimuli.filter(text='a "quoted", text').exists()


# --- Per pair or per row, against an independent computation ----------------------------------
def assembled_sts() -> list[tuple[str, str, float]]:
    """STS-B dev as published, plus what other STS sets hold: rows whose two sentences are
    the same string (5.0, as STS12-16 rate them) and pairs listed again with other scores."""
    rows = read_stsb()
    rng = random.Random(11)
    extra = [(a, a, 5.0) for a, _, _ in rng.sample(rows, 40)]
    again = [(b, a, round(rng.uniform(0, 5), 1)) for a, b, _ in rng.sample(rows, 60)]
    return rows + extra + again


def import_sts(rows, unit: str) -> HumanJudgments:
    text = "a\tb\tvalue\n" + "".join(f"{a}\t{b}\t{v}\n" for a, b, v in rows)  # bare quotes
    return import_pairs(upload("sts.tsv", text), name=f"sts {unit}", scoring_unit=unit,
                        new_dataset_name=f"sts sentences {unit}", scale_min=0, scale_max=5)  # fmt: skip


@pytest.mark.parametrize("unit", ["row", "pair"])
def test_sts_scored_per_row_or_per_pair_equals_sentence_transformers_and_scipy(minilm, unit):  # noqa: F811
    rows = assembled_sts()
    judgments = import_sts(rows, unit)
    assert judgments.import_report["self_pairs_kept"] == 40
    assert judgments.import_report["repeated_pairs"] >= 60
    run = services.run_create(
        dataset=judgments.dataset,
        models=[make_text_model()],
        metrics=[pair_alignment_entry(correlation="spearman"),
                 pair_alignment_entry(correlation="pearson")],
    )  # fmt: skip
    run_steps(run)
    scores = {s.params["correlation"]: s for s in Score.objects.filter(run=run)}

    # Independent: sentence-transformers' own encode, cosine per row, scipy.
    sentences = sorted({s for a, b, _ in rows for s in (a, b)})
    vectors = minilm.encode(sentences, convert_to_numpy=True).astype(np.float64)
    unit_vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    at = {s: k for k, s in enumerate(sentences)}
    if unit == "row":
        keys = [(at[a], at[b]) for a, b, _ in rows]
        human = np.array([v for _, _, v in rows])
    else:  # the mean per unordered pair
        grouped: dict[tuple[int, int], list[float]] = {}
        for a, b, v in rows:
            grouped.setdefault(tuple(sorted((at[a], at[b]))), []).append(v)
        keys = sorted(grouped)
        human = np.array([np.mean(grouped[k]) for k in keys])
    cosine = np.array([1.0 if i == j else unit_vectors[i] @ unit_vectors[j] for i, j in keys])
    assert scores["spearman"].details["unit"] == unit
    assert scores["spearman"].details["pairs"] == len(keys)
    assert scores["spearman"].value == pytest.approx(spearmanr(cosine, human).statistic, abs=1e-6)
    assert scores["pearson"].value == pytest.approx(pearsonr(cosine, human).statistic, abs=1e-6)
    assert scores["spearman"].ci_low < scores["spearman"].value < scores["spearman"].ci_high


# --- Files as published: a column map ---------------------------------------------------------
def published(path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def test_simlex_999_as_published_with_its_own_columns():
    simlex = SHARED_DATA / "simlex999"
    judgments = import_pairs(
        published(simlex / "SimLex-999.txt"), name="SimLex-999", new_dataset_name="simlex",
        columns=ColumnMap(columns=parse_columns("a=word1, b=word2, value=SimLex999")),
    )  # fmt: skip
    assert judgments.judgment_count == 999
    assert judgments.import_report["read_as"] == (
        "tab-separated, no quote processing (delimiter from the first line)"
    )
    assert judgments.import_report["columns"] == {
        "header": True, "columns": {"a": "word1", "b": "word2", "value": "SimLex999"},
    }  # fmt: skip
    copy = {}
    for line in (simlex / "EN-SIMLEX-999.faruqui.txt").read_text().splitlines():
        a, b, v = line.split("\t")
        copy[(a, b)] = float(v)
    order = dict(judgments.dataset.stimuli.values_list("text", "order"))
    texts = {o: t for t, o in order.items()}
    stored = {
        (texts[a], texts[b]): v
        for a, b, v in judgments.rows.values_list("a__order", "b__order", "value")
    }
    assert stored == copy  # the Faruqui copy agrees with the original on every pair


def test_a_headerless_word_pair_file_is_read_in_the_formats_order():
    judgments = import_pairs(published(SHARED_DATA / "men" / "EN-MEN-TR-3k.txt"), name="MEN",
                             new_dataset_name="men", columns=ColumnMap(header=False))  # fmt: skip
    assert judgments.judgment_count == 3000
    first = judgments.rows.order_by("pk").values_list("a__text", "b__text", "value").first()
    assert first == ("sun", "sunlight", 50.0)


def test_things_index_coded_triplets_with_a_names_file_reach_the_published_ceiling():
    things = SHARED_DATA / "things_odd_one_out"
    columns = column_map_from(
        {
            "no_header": True,
            "choice_is": "position",
            "names_file": published(things / "item_names.tsv"),
        }
    )
    judgments = judgments_import(
        file=published(things / "test_triplets.csv"), format="triplets", name="THINGS",
        new_dataset_name="things words", create_missing=True, allow_repeats=True,
        columns=columns,
    )  # fmt: skip
    assert judgments.judgment_count == 20_000
    assert judgments.ceiling == pytest.approx(0.6438, abs=1e-4)  # SOURCES.md: 64.38%
    assert judgments.import_report["columns"]["names"] == 1854
    # Row 1 is "128 1107 734 1 272": concepts 128, 1107, 734 (1-based), the first one chosen.
    names = [
        line.split("\t")[0] for line in (things / "item_names.tsv").read_text().splitlines()[1:]
    ]
    first = judgments.rows.order_by("pk").first()
    assert (first.a.text, first.b.text, first.c.text) == (names[127], names[1106], names[733])
    assert first.chosen_id == first.a_id and first.participant == "272"


def test_a_names_file_is_read_by_the_column_asked_for():
    """THINGS' item_names.tsv lists Word first (bat1 and bat2 are both "bat") and uniqueID
    second: read by uniqueID, the triplets reach 1,854 distinct concepts as published."""
    things = SHARED_DATA / "things_odd_one_out"
    columns = column_map_from(
        {"no_header": True, "choice_is": "position", "names_column": "uniqueID",
         "names_file": published(things / "item_names.tsv")}
    )  # fmt: skip
    rows = [line.split("\t") for line in (things / "item_names.tsv").read_text().splitlines()]
    unique_ids = [row[rows[0].index("uniqueID")] for row in rows[1:]]
    assert columns.names == tuple(unique_ids) and len(set(columns.names)) == 1854
    assert columns.describe()["names_column"] == "uniqueID"
    by_number = column_map_from({"names_file": published(things / "item_names.tsv"),
                                 "names_column": "6"})  # fmt: skip
    assert by_number.names == columns.names
    with pytest.raises(ValidationError, match="no column 'uid'; its columns are 'Word'"):
        column_map_from({"names_file": published(things / "item_names.tsv"), "names_column": "uid"})


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("w1\tw2\ts\nx\ty\t1\n", {"columns": "a=w1, b=w2, score=s"},
         "A pairs file has no role 'score'; its roles are a, b, value, participant."),
        ("w1\tw2\ts\nx\ty\t1\n", {"columns": "a=w1, b=w2, value=sim"},
         "The file has no 'sim' column (as mapped)"),
        ("x\ty\t1\n", {"no_header": True, "columns": "a=word1, b=2, value=3"},
         "A file without a header has no column names: map 'a' to a column number"),
        ("w1\tw2\ts\nx\ty\t1\n", {"columns": "a=1, b=2, value=7"},
         "The file has 3 columns; value cannot be column 7"),
        ("x\ty\t1\n", {"no_header": True, "columns": "a=1, value=3"},
         "Say which column holds b"),
    ],
)  # fmt: skip
def test_a_column_map_that_does_not_fit_the_file_says_so_and_stores_nothing(text, columns, message):
    before = stored_counts()
    with pytest.raises(ValidationError) as caught:
        import_pairs(upload("pairs.tsv", text), columns=column_map_from(columns))
    assert message in " ".join(caught.value.messages)
    assert stored_counts() == before


def test_index_and_position_errors_name_the_row():
    names = upload("names.tsv", "name\ncat\ndog\nfox\n")
    columns = column_map_from({"no_header": True, "choice_is": "position", "names_file": names})
    for text, message in [
        ("1\t2\t4\t1\n", "Row 1: '4' is not an index into the names list (1 to 3)."),
        ("1\t2\t3\t4\n", "Row 1: the choice '4' is not a position 1 to 3 among the options"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            judgments_import(file=upload("t.tsv", text), format="triplets", name="t",
                             new_dataset_name="s", create_missing=True, columns=columns)  # fmt: skip


def test_the_mapping_is_offered_by_the_api_and_recorded(researcher):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(researcher)
    simlex = SHARED_DATA / "simlex999" / "SimLex-999.txt"
    response = api.post(
        "/api/judgments/",
        {"file": published(simlex), "format": "pairs", "name": "SimLex-999",
         "new_dataset_name": "simlex", "columns": "a=word1, b=word2, value=SimLex999",
         "scoring_unit": "row"},
        format="multipart",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["judgment_count"] == 999 and body["scoring_unit"] == "row"
    assert body["import_report"]["columns"]["columns"]["value"] == "SimLex999"


def test_a_staged_file_is_kept_for_its_session_only(client, researcher):
    from django.urls import reverse

    from tests.factories import ResearcherFactory

    client.force_login(researcher)
    url = reverse("evaluation:judgments_import")
    fields = {"name": "SimLex-999", "format": "pairs", "new_dataset_name": "simlex"}
    failed = client.post(
        url, {**fields, "file": published(SHARED_DATA / "simlex999" / "SimLex-999.txt")}
    )
    assert failed.status_code == 200
    token = failed.context["staged_token"]
    assert token and "Using <strong>SimLex-999.txt</strong>" in failed.content.decode()

    other = client.__class__()
    other.force_login(ResearcherFactory())
    stolen = other.post(
        url, {**fields, "staged_file": token, "columns": "a=word1, b=word2, value=SimLex999"}
    )
    assert stolen.status_code == 200 and "This field is required." in stolen.content.decode()
    assert HumanJudgments.objects.count() == 0

    mapped = client.post(
        url, {**fields, "staged_file": token, "columns": "a=word1, b=word2, value=SimLex999"}
    )
    assert mapped.status_code == 302
    assert HumanJudgments.objects.get().judgment_count == 999
    again = client.post(url, {**fields, "name": "again", "staged_file": token})
    assert "This field is required." in again.content.decode()  # discarded once imported


def test_dissimilarities_are_kept_as_published_and_scored_as_similarities():
    from evaluation import downloads
    from evaluation.engine.metrics.human import pair_alignment

    rows = [(a, b, v) for a, b, v in SELF_ROWS if a != b]
    similar = import_pairs(csv_upload(["a", "b", "value"], rows), name="sim",
                           new_dataset_name="s1")  # fmt: skip
    distant = import_pairs(csv_upload(["a", "b", "value"], [(a, b, 10 - v) for a, b, v in rows]),
                           name="dist", new_dataset_name="s2", value_is="dissimilarity")  # fmt: skip
    assert set(distant.rows.values_list("value", flat=True)) == {10 - v for _, _, v in rows}
    embeddings = np.random.default_rng(2).normal(size=(4, 8))
    scores = [
        pair_alignment(embeddings, target_data(j.target).ratings, n_boot=50).value
        for j in (similar, distant)
    ]
    assert scores[0] == pytest.approx(scores[1])  # the same agreement either way
    table = b"".join(downloads.human_download(distant.target, shape="pairs").chunks).decode()
    assert table.splitlines()[0].split(",")[4] == "human_dissimilarity"
    assert {float(line.split(",")[4]) for line in table.splitlines()[1:]} == {
        10 - v for _, _, v in rows
    }
    assert "The values are dissimilarities" in " ".join(report_lines(distant))
