"""The Great Expectations suite for the training table (trending_assets.checks.training_suite)."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import REPO
from trending_assets.checks.outcomes import ExpectationOutcome, SuiteOutcome
from trending_assets.checks.training_suite import TrainingLimits, validate_training_table

DATA = REPO / "trending_assets" / "data"
NETFLIX = DATA / "netflix_titles_genres.csv.gz"

GENRES = ["Drama", "Comedy", "Documentary", "Horror"]
# Thresholds the hand-built table is made to pass.
OK = {"min_rows": 10, "min_support": 2, "max_no_genre_share": 0.2, "rows_without_genre": 2}

ROW_COUNT = "expect_table_row_count_to_be_between"
COLUMNS = "expect_column_to_exist(id, title, kind, description, genres, year, labels)"
ID_UNIQUE = "expect_column_values_to_be_unique(id)"
DESCRIPTION_NOT_NULL = "expect_column_values_to_not_be_null(description)"
DESCRIPTION_LENGTH = "expect_column_value_lengths_to_be_between(description)"
KIND = "expect_column_values_to_be_in_set(kind)"
YEAR = "expect_column_values_to_be_between(year)"
LABELS_NOT_EMPTY = "expect_column_value_lengths_to_be_between(labels)"
LABEL_COUNT = "expect_column_values_to_be_between(number of labels)"
LABELS_KNOWN = "expect_column_values_to_be_null(labels not in genres)"
SUPPORT = "expect_column_sum_to_be_between(titles per genre)"
SPLIT = "expect_column_values_to_be_in_set(split)"
SYNOPSIS_UNIQUE = "expect_column_values_to_be_unique(description)"
NULL_RATES = "expect_column_values_to_not_be_null(title, kind, genres, year)"
CARDINALITY = "expect_column_mean_to_be_between(number of labels)"
DUPLICATE_IDS = "duplicate id rate across batches (computed)"
NO_GENRE_SHARE = "share of titles without a canonical genre (computed)"

# (title, kind, raw tags, year, canonical labels): 20 real Netflix-style rows. Horror has
# exactly two titles (t18, t19), so min_support=2 holds with nothing to spare.
ROWS = [
    ("The Crown", "tv", "British TV Shows|TV Dramas", 2020, "Drama"),
    ("Roma", "movie", "Dramas|International Movies", 2018, "Drama"),
    ("Marriage Story", "movie", "Dramas|Comedies", 2019, "Drama|Comedy"),
    ("The Irishman", "movie", "Dramas", 2019, "Drama"),
    ("Unorthodox", "tv", "International TV Shows|TV Dramas", 2020, "Drama"),
    ("Dolemite Is My Name", "movie", "Comedies|Dramas", 2019, "Drama|Comedy"),
    ("Sex Education", "tv", "British TV Shows|TV Comedies|TV Dramas", 2020, "Drama|Comedy"),
    ("The Good Place", "tv", "TV Comedies", 2020, "Comedy"),
    ("Murder Mystery", "movie", "Comedies", 2019, "Comedy"),
    ("Big Mouth", "tv", "TV Comedies", 2020, "Comedy"),
    ("The Mitchells vs the Machines", "movie", "Children & Family Movies|Comedies", 2021, "Comedy"),
    ("Our Planet", "tv", "Docuseries|Science & Nature TV", 2019, "Documentary"),
    ("My Octopus Teacher", "movie", "Documentaries", 2020, "Documentary"),
    ("Icarus", "movie", "Documentaries|Sports Movies", 2017, "Documentary"),
    ("Making a Murderer", "tv", "Crime TV Shows|Docuseries", 2018, "Documentary"),
    ("13th", "movie", "Documentaries", 2016, "Documentary"),
    ("Tiger King", "tv", "Crime TV Shows|Docuseries", 2020, "Documentary|Comedy"),
    ("American Factory", "movie", "Documentaries", 2019, "Documentary"),
    ("Bird Box", "movie", "Horror Movies|Thrillers", 2018, "Horror|Drama"),
    ("The Haunting of Hill House", "tv", "TV Horror|TV Dramas", 2018, "Horror|Drama"),
]


def valid_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"netflix:t{i:02d}" for i in range(len(ROWS))],
            "title": [r[0] for r in ROWS],
            "kind": [r[1] for r in ROWS],
            "description": [f"A synopsis of {r[0]}, long enough to classify." for r in ROWS],
            "genres": [r[2] for r in ROWS],
            "year": pd.array([r[3] for r in ROWS], dtype="int64"),
            "source": "netflix",
            "labels": [r[4] for r in ROWS],
        }
    )


def validate(table: pd.DataFrame, genres=GENRES, **overrides) -> SuiteOutcome:
    return validate_training_table(table, genres, **{**OK, **overrides})


def outcome(result: SuiteOutcome, expectation: str) -> ExpectationOutcome:
    (found,) = [o for o in result.outcomes if o.expectation == expectation]
    return found


@pytest.fixture(scope="module")
def baseline() -> SuiteOutcome:
    return validate(valid_table())


def test_valid_table_passes(baseline: SuiteOutcome) -> None:
    assert baseline.success, baseline.to_markdown()
    assert baseline.failures == []
    names = [o.expectation for o in baseline.outcomes]
    assert len(names) == len(set(names))
    for name in (ROW_COUNT, COLUMNS, ID_UNIQUE, DESCRIPTION_LENGTH, KIND, YEAR, LABEL_COUNT):
        assert name in names
    assert {LABELS_KNOWN, SUPPORT, NO_GENRE_SHARE} <= set(names)
    assert SPLIT not in names  # no split column, no split expectation
    assert outcome(baseline, ROW_COUNT).observed == "20 rows"
    assert outcome(baseline, ROW_COUNT).expected == ">= 10 rows"
    assert outcome(baseline, SUPPORT).observed == "lowest: Horror with 2 titles"
    assert outcome(baseline, NO_GENRE_SHARE).observed == "9.1% (2 of 22 titles)"
    assert all(o.sample == [] for o in baseline.outcomes)


def test_valid_table_markdown(baseline: SuiteOutcome) -> None:
    md = baseline.to_markdown()
    lines = md.splitlines()
    assert "all 18 expectations passed" in lines[0]
    assert lines[2] == "| expectation | result | observed | expected | sample |"
    rows = [line for line in lines[4:] if line.startswith("| ")]
    assert len(rows) == len(baseline.outcomes)
    assert all(" | pass | " in row for row in rows)


def _duplicate_id(t: pd.DataFrame) -> None:
    t.loc[5, "id"] = "netflix:t03"


def _empty_description(t: pd.DataFrame) -> None:
    t.loc[4, "description"] = ""


def _null_description(t: pd.DataFrame) -> None:
    t.loc[4, "description"] = None


def _film(t: pd.DataFrame) -> None:
    t.loc[7, "kind"] = "film"


def _year_1700(t: pd.DataFrame) -> None:
    t.loc[9, "year"] = 1700


def _unknown_label(t: pd.DataFrame) -> None:
    t.loc[2, "labels"] = "Drama|Westerns"


def _four_labels(t: pd.DataFrame) -> None:
    t.loc[2, "labels"] = "Drama|Comedy|Documentary|Horror"


def _horror_under_support(t: pd.DataFrame) -> None:
    t.loc[19, "labels"] = "Drama"


def _shared_synopsis(t: pd.DataFrame) -> None:
    t.loc[3, "description"] = t.loc[2, "description"]


def _title_missing(t: pd.DataFrame) -> None:
    t.loc[1, "title"] = ""


# (defect, overrides, the one expectation that fails, text its sample must contain)
DEFECTS = {
    "duplicate id": (_duplicate_id, {}, ID_UNIQUE, "netflix:t03"),
    "empty description": (_empty_description, {}, DESCRIPTION_LENGTH, "netflix:t04: ''"),
    "null description": (_null_description, {}, DESCRIPTION_NOT_NULL, "netflix:t04"),
    "kind film": (_film, {}, KIND, "netflix:t07: 'film'"),
    "year 1700": (_year_1700, {}, YEAR, "netflix:t09: 1700"),
    "label not in genres": (_unknown_label, {}, LABELS_KNOWN, "netflix:t02: Westerns"),
    "four labels": (_four_labels, {}, LABEL_COUNT, "netflix:t02: 4 labels"),
    "too few rows": (None, {"min_rows": 30}, ROW_COUNT, None),
    "genre under min_support": (_horror_under_support, {}, SUPPORT, "Horror: 1"),
    "no-genre share": (None, {"rows_without_genre": 20}, NO_GENRE_SHARE, None),
    "synopsis shared by two titles": (_shared_synopsis, {}, SYNOPSIS_UNIQUE, "netflix:t03"),
    "title missing": (_title_missing, {}, NULL_RATES, "title: 5.0%"),
    "too many ids replaced across batches": (
        None, {"duplicate_ids_replaced": 30}, DUPLICATE_IDS, None),
    "label cardinality below its floor": (
        None, {"limits": TrainingLimits(label_cardinality=(1.5, 3.0))}, CARDINALITY, None),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_fails_exactly_its_expectation(defect: str) -> None:
    mutate, overrides, expectation, sample = DEFECTS[defect]
    table = valid_table()
    if mutate is not None:
        mutate(table)
    result = validate(table, **overrides)
    assert not result.success
    assert [f.expectation for f in result.failures] == [expectation], result.to_markdown()
    failed = result.failures[0]
    if sample is not None:
        assert sample in failed.sample
    assert len(failed.sample) <= 5
    assert "FAIL" in result.to_markdown()


def test_defect_observed_and_expected_texts() -> None:
    """Several defects in one table: each outcome says what was seen and what was wanted."""
    table = valid_table()
    for mutate in (_duplicate_id, _film, _year_1700, _unknown_label, _horror_under_support):
        mutate(table)
    table["split"] = ["train"] * 19 + ["dev"]
    result = validate(table, min_rows=30, rows_without_genre=20)
    failed = {f.expectation: f for f in result.failures}
    assert set(failed) == {
        ID_UNIQUE,
        KIND,
        YEAR,
        LABELS_KNOWN,
        SUPPORT,
        SPLIT,
        ROW_COUNT,
        NO_GENRE_SHARE,
    }
    assert failed[ID_UNIQUE].observed == "2 rows share a duplicated id"
    assert failed[ID_UNIQUE].sample == ["netflix:t03"]
    assert failed[KIND].observed == "1 of 20 kinds not in set"
    assert failed[KIND].expected == "in {movie, tv}"
    assert failed[YEAR].expected == "1900–2100"
    assert failed[ROW_COUNT].observed == "20 rows"
    assert failed[ROW_COUNT].expected == ">= 30 rows"
    assert failed[SUPPORT].observed == "1 of 4 genres below 2"
    assert failed[SUPPORT].expected == ">= 2 titles per genre"
    assert failed[SPLIT].sample == ["netflix:t19: 'dev'"]
    assert failed[NO_GENRE_SHARE].observed == "50.0% (20 of 40 titles)"
    assert failed[NO_GENRE_SHARE].expected == "<= 20.0%"
    # Labels are joined by "|": the markdown table must escape them to keep its columns.
    md = result.to_markdown()
    assert "8 of 19 expectations FAILED" in md.splitlines()[0]
    for line in md.splitlines()[4:]:
        assert line.replace("\\|", "").count("|") == 6


def test_missing_column_is_reported_not_raised() -> None:
    result = validate(valid_table().drop(columns=["labels"]))
    failed = {f.expectation: f for f in result.failures}
    assert failed[COLUMNS].observed == "missing: labels"
    assert failed[COLUMNS].sample == ["labels"]
    assert failed[LABELS_KNOWN].observed == "not evaluated: column labels missing"
    assert {LABEL_COUNT, LABELS_NOT_EMPTY, SUPPORT} <= set(failed)
    assert ID_UNIQUE not in failed and KIND not in failed


def test_outcome_dataclasses_without_gx() -> None:
    outcomes = [
        ExpectationOutcome("a", True, "20 rows", ">= 10 rows", []),
        ExpectationOutcome("b", False, "1 of 2", "in {x}", ["id1: 'Drama|Westerns'"]),
    ]
    suite = SuiteOutcome("s", False, outcomes)
    assert suite.failures == [outcomes[1]]
    md = suite.to_markdown()
    assert "| b | **FAIL** | 1 of 2 | in {x} | id1: 'Drama\\|Westerns' |" in md


def test_import_is_light_and_offline() -> None:
    """Importing the suites pulls in neither GX (slow) nor dagster, and turns analytics off."""
    code = (
        "import os, sys\n"
        "os.environ.pop('GX_ANALYTICS_ENABLED', None)\n"
        "import trending_assets.checks.batch_suite, trending_assets.checks.training_suite\n"
        "assert 'great_expectations' not in sys.modules\n"
        "assert not any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules)\n"
        "assert os.environ['GX_ANALYTICS_ENABLED'] == 'false'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# A deliberately trivial raw-tag -> canonical-genre mapping (movie/TV twins share a genre);
# the real taxonomy lives elsewhere. Titles none of whose tags map are dropped, as the
# training table does, and counted as rows without a genre.
TRIVIAL_MAPPING = {
    "Dramas": "Drama",
    "TV Dramas": "Drama",
    "Comedies": "Comedy",
    "TV Comedies": "Comedy",
    "Documentaries": "Documentary",
    "Docuseries": "Documentary",
    "Horror Movies": "Horror",
    "TV Horror": "Horror",
    "Thrillers": "Thriller",
    "TV Thrillers": "Thriller",
    "Romantic Movies": "Romance",
    "Romantic TV Shows": "Romance",
    "Children & Family Movies": "Kids & Family",
    "Kids' TV": "Kids & Family",
    "Action & Adventure": "Action & Adventure",
    "TV Action & Adventure": "Action & Adventure",
}


def test_real_netflix_table_passes() -> None:
    raw = pd.read_csv(NETFLIX, keep_default_na=False)
    assert len(raw) > 8000
    genres = list(dict.fromkeys(TRIVIAL_MAPPING.values()))
    labels = [
        "|".join(g for g in genres if any(TRIVIAL_MAPPING.get(t) == g for t in tags.split("|")))
        for tags in raw["genres"]
    ]
    with_labels = raw.assign(labels=labels)
    has_genre = with_labels["labels"] != ""
    table = with_labels[has_genre].reset_index(drop=True)
    dropped = int((~has_genre).sum())

    started = time.perf_counter()
    result = validate_training_table(
        table,
        genres,
        min_rows=5000,
        min_support=50,
        max_no_genre_share=0.25,
        rows_without_genre=dropped,
    )
    elapsed = time.perf_counter() - started
    print(f"\nGX validation of {len(table)} Netflix rows: {elapsed:.2f} s")

    assert result.success, result.to_markdown()
    assert outcome(result, ROW_COUNT).observed == f"{len(table)} rows"
    share = outcome(result, NO_GENRE_SHARE)
    assert share.observed.endswith(f"({dropped} of {len(raw)} titles)")
