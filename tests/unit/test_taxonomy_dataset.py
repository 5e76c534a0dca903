"""Tests for trending_assets.ml.taxonomy, trending_assets.ml.dataset and ml.landing_file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers import REPO as REPO_ROOT
from trending_assets.ml.dataset import (
    TitleSplits,
    assign_splits,
    build_training_table,
    label_matrix,
    out_of_distribution_table,
    split_of,
)
from trending_assets.ml.landing_file import REQUIRED_COLUMNS, LandingFileError, read_titles
from trending_assets.ml.taxonomy import Taxonomy, TaxonomyError

GENRES_YAML = REPO_ROOT / "configs" / "genres.yaml"
NETFLIX = REPO_ROOT / "trending_assets" / "data" / "netflix_titles_genres.csv.gz"
OOD = REPO_ROOT / "trending_assets" / "data" / "streaming_ood_titles_genres.csv.gz"
SALT = "trending-now-split-v1"


@pytest.fixture(scope="module")
def taxonomy_config() -> dict:
    return yaml.safe_load(GENRES_YAML.read_text())


@pytest.fixture(scope="module")
def taxonomy(taxonomy_config: dict) -> Taxonomy:
    return Taxonomy.from_config(taxonomy_config)


@pytest.fixture(scope="module")
def netflix() -> pd.DataFrame:
    return pd.read_csv(NETFLIX, keep_default_na=False)


@pytest.fixture(scope="module")
def netflix_table(netflix: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    table, _, _ = build_training_table([netflix], taxonomy)
    return table


def _rows(*rows: tuple) -> pd.DataFrame:
    """Titles frame from (id, title, genres[, year]) tuples."""
    records = []
    for row in rows:
        tid, title, genres, *rest = row
        records.append({
            "id": tid, "title": title, "kind": "movie", "description": f"about {title}",
            "genres": genres, "year": rest[0] if rest else 2020, "source": "test",
        })
    return pd.DataFrame.from_records(records, columns=list(REQUIRED_COLUMNS))


SMALL_TAXONOMY = {
    "min_support": 2,
    "genres": {"Drama": ["Dramas", "TV Dramas"], "Comedy": ["Comedies"], "Horror": ["Horror"]},
    "drop": ["International Movies", "Movies"],
}


# --- taxonomy ---------------------------------------------------------------------------


def test_taxonomy_from_genres_yaml(taxonomy: Taxonomy, taxonomy_config: dict) -> None:
    assert taxonomy.min_support == 50
    assert taxonomy.genres == tuple(taxonomy_config["genres"])
    assert taxonomy.genres[0] == "Drama"
    assert len(taxonomy.genres) == 18
    for genre, tags in taxonomy_config["genres"].items():
        for tag in tags:
            assert taxonomy.mapping[tag] == genre
    for tag in taxonomy_config["drop"]:
        assert taxonomy.mapping[tag] is None


def test_every_netflix_tag_is_known(netflix: pd.DataFrame, taxonomy: Taxonomy) -> None:
    tags = {t.strip() for joined in netflix["genres"] for t in joined.split("|") if t.strip()}
    assert len(tags) > 30
    assert tags - set(taxonomy.mapping) == set()
    unknown_anywhere = [u for joined in netflix["genres"]
                        for u in taxonomy.map_tags(joined.split("|"))[1]]
    assert unknown_anywhere == []


def test_movie_and_tv_twins_merge(taxonomy: Taxonomy) -> None:
    assert taxonomy.map_tags(["Dramas", "TV Dramas"]) == (["Drama"], [])
    assert taxonomy.map_tags(["Dramas"]) == (["Drama"], [])
    assert taxonomy.map_tags(["TV Dramas"]) == (["Drama"], [])
    assert taxonomy.map_tags(["Horror Movies", "TV Horror"]) == (["Horror"], [])
    assert taxonomy.map_tags(["Children & Family Movies", "Kids' TV"]) == (["Kids & Family"], [])


def test_non_genre_tags_are_dropped(taxonomy: Taxonomy) -> None:
    assert taxonomy.map_tags(["International Movies", "Movies", "TV Shows"]) == ([], [])
    assert taxonomy.map_tags(["International Movies", "Comedies"]) == (["Comedy"], [])


def test_map_tags_taxonomy_order_and_whitespace(taxonomy: Taxonomy) -> None:
    genres, unknown = taxonomy.map_tags([" Comedies", "Dramas ", "", "  ", "Thrillers"])
    assert genres == ["Drama", "Comedy", "Thriller"]  # taxonomy order, not input order
    assert unknown == []


def test_unknown_tags_are_reported(taxonomy: Taxonomy) -> None:
    genres, unknown = taxonomy.map_tags(["Dramas", "Space Westerns", "Telenovelas"])
    assert genres == ["Drama"]
    assert unknown == ["Space Westerns", "Telenovelas"]


def test_tag_listed_twice_raises() -> None:
    twice = {"genres": {"Drama": ["Dramas"], "Comedy": ["Comedies", "Dramas"]}}
    with pytest.raises(TaxonomyError, match="'Dramas' is listed twice"):
        Taxonomy.from_config(twice)
    in_drop_too = {"genres": {"Drama": ["Dramas"]}, "drop": ["Movies", "Dramas"]}
    with pytest.raises(TaxonomyError, match="'Dramas' is listed twice"):
        Taxonomy.from_config(in_drop_too)


def test_taxonomy_rejects_bad_configs() -> None:
    with pytest.raises(TaxonomyError, match="'genres'"):
        Taxonomy.from_config({"drop": ["Movies"]})
    with pytest.raises(TaxonomyError, match="'Drama' lists no raw tags"):
        Taxonomy.from_config({"genres": {"Drama": []}})
    with pytest.raises(TaxonomyError, match="not a string"):
        Taxonomy.from_config({"genres": {"Drama": ["Dramas", 7]}})
    with pytest.raises(TaxonomyError, match="min_support"):
        Taxonomy.from_config({"genres": {"Drama": ["Dramas"]}, "min_support": 0})


def test_supported_genres() -> None:
    tax = Taxonomy.from_config(SMALL_TAXONOMY)
    assert tax.supported_genres([["Drama"], ["Drama", "Comedy"], ["Horror"], ["Comedy"]]) == [
        "Drama", "Comedy"]
    assert tax.supported_genres([]) == []


# --- read_titles ------------------------------------------------------------------------

GOOD_CSV = (
    b"id,title,kind,description,genres,year,source\n"
    b'n:1,Alpha,movie,"A drama, with commas",Dramas|International Movies,2019,netflix\n'
    b"n:2,Beta,tv,Laughs,TV Comedies,2021,netflix\n"
    b"n:3,NA,movie,,Documentaries, 2005 ,netflix\n"
)


def test_read_titles_csv() -> None:
    frame = read_titles(GOOD_CSV, "batch.csv")
    assert frame["id"].tolist() == ["n:1", "n:2", "n:3"]
    assert frame["description"].tolist() == ["A drama, with commas", "Laughs", ""]
    assert frame["title"].tolist()[2] == "NA"  # no NA guessing: a title may be called NA
    assert frame["genres"].tolist()[0] == "Dramas|International Movies"
    assert frame["year"].dtype == np.int64
    assert frame["year"].tolist() == [2019, 2021, 2005]


def test_read_titles_gzip_matches_plain() -> None:
    plain = read_titles(GOOD_CSV, "batch.csv")
    zipped = read_titles(gzip.compress(GOOD_CSV), "batch.csv.gz")
    pd.testing.assert_frame_equal(plain, zipped)


def test_read_titles_bundled_file(netflix: pd.DataFrame) -> None:
    frame = read_titles(NETFLIX.read_bytes(), NETFLIX.name)
    assert len(frame) == len(netflix) == 8775
    assert frame["id"].tolist() == netflix["id"].tolist()
    assert frame["year"].tolist() == netflix["year"].tolist()


@pytest.mark.parametrize("data", [b"", b"  \n\n", gzip.compress(b""), gzip.compress(b"\n")])
def test_read_titles_empty_file(data: bytes) -> None:
    with pytest.raises(LandingFileError, match=r"drop\.csv: the file is empty"):
        read_titles(data, "drop.csv")


def test_read_titles_missing_column_names_it() -> None:
    data = b"id,title,kind,description,genres,source\nn:1,A,movie,d,Dramas,netflix\n"
    with pytest.raises(LandingFileError) as info:
        read_titles(data, "no_year.csv")
    message = str(info.value)
    assert "no_year.csv" in message
    assert "missing column(s) year;" in message


def test_read_titles_missing_several_columns() -> None:
    with pytest.raises(LandingFileError, match=r"missing column\(s\) kind, genres"):
        read_titles(b"id,title,description,year,source\nn:1,A,d,2000,x\n", "f.csv")


@pytest.mark.parametrize("bad_year", ["twenty", "", "2020.5", "inf", "1e20"])
def test_read_titles_non_integer_year_names_the_id(bad_year: str) -> None:
    data = (
        "id,title,kind,description,genres,year,source\n"
        "n:1,A,movie,d,Dramas,2001,netflix\n"
        f"n:bad,B,movie,d,Dramas,{bad_year},netflix\n"
        "n:3,C,movie,d,Dramas,2003,netflix\n"
    ).encode()
    with pytest.raises(LandingFileError) as info:
        read_titles(data, "years.csv")
    message = str(info.value)
    assert "years.csv" in message
    assert "'year' is not an integer" in message
    assert "n:bad" in message
    assert "n:1" not in message and "n:3" not in message


def test_read_titles_integral_float_year_is_accepted() -> None:
    data = b"id,title,kind,description,genres,year,source\nn:1,A,movie,d,Dramas,2020.0,x\n"
    assert read_titles(data, "f.csv")["year"].tolist() == [2020]


def test_read_titles_unparseable() -> None:
    with pytest.raises(LandingFileError, match=r"broken\.csv\.gz: .*cannot be decompressed"):
        read_titles(b"\x1f\x8bnot really gzip", "broken.csv.gz")
    with pytest.raises(LandingFileError, match=r"utf16\.csv: not a table: .*UTF-16"):
        read_titles(b"\xff\xfe\x00id,title\n", "utf16.csv")
    with pytest.raises(LandingFileError, match=r"quote\.csv: cannot be parsed as CSV"):
        read_titles(b'id,title\nn:1,"never closed\n', "quote.csv")
    with pytest.raises(LandingFileError, match=r"latin\.csv: not valid UTF-8: .*0xe9 on line 2"):
        read_titles("id,title\nn:1,Am\xe9lie\n".encode("latin-1"), "latin.csv")


# --- build_training_table ---------------------------------------------------------------


def test_later_batch_wins_on_repeated_id() -> None:
    tax = Taxonomy.from_config(SMALL_TAXONOMY)
    first = _rows(("a", "Old A", "Dramas"), ("b", "B", "Comedies"), ("c", "C", "Dramas"),
                  ("d", "D", "Comedies"))
    second = _rows(("a", "New A", "Comedies|Movies", 1999), ("e", "E", "Dramas"))
    table, genres, stats = build_training_table([first, second], tax)
    assert stats.input_rows == 6
    assert stats.duplicate_ids_replaced == 1
    assert table["id"].tolist() == ["a", "b", "c", "d", "e"]  # sorted, one row per id
    row_a = table.set_index("id").loc["a"]
    assert row_a["title"] == "New A"
    assert row_a["year"] == 1999
    assert row_a["labels"] == "Comedy"
    assert genres == ["Drama", "Comedy"]


def test_titles_with_only_dropped_tags_are_removed() -> None:
    tax = Taxonomy.from_config(SMALL_TAXONOMY)
    batch = _rows(("a", "A", "Dramas|International Movies"), ("b", "B", "Dramas"),
                  ("c", "C", "International Movies|Movies"), ("d", "D", "Movies"),
                  ("e", "E", ""), ("f", "F", "Comedies"), ("g", "G", "Comedies|TV Dramas"))
    table, genres, stats = build_training_table([batch], tax)
    assert genres == ["Drama", "Comedy"]
    assert set(table["id"]) == {"a", "b", "f", "g"}
    assert stats.rows_without_genre == 3
    assert stats.unknown_tags == {}
    assert dict(zip(table["id"], table["labels"], strict=True)) == {
        "a": "Drama", "b": "Drama", "f": "Comedy", "g": "Drama|Comedy"}


def test_genres_below_min_support_are_dropped_from_labels() -> None:
    tax = Taxonomy.from_config(SMALL_TAXONOMY)  # min_support 2
    batch = _rows(("a", "A", "Dramas|Horror"), ("b", "B", "Dramas"), ("c", "C", "Comedies"),
                  ("d", "D", "Comedies"), ("e", "E", "Horror|Space Westerns"),
                  ("f", "F", "Space Westerns|Dramas"))
    table, genres, stats = build_training_table([batch], tax)
    # 'a' and 'e' both carry Horror: 2 titles, enough for min_support 2
    assert genres == ["Drama", "Comedy", "Horror"]
    assert stats.unknown_tags == {"Space Westerns": 2}

    batch = batch[batch["id"] != "e"]
    table, genres, stats = build_training_table([batch], tax)
    assert genres == ["Drama", "Comedy"]
    assert stats.genres_below_min_support == ["Horror"]
    assert stats.unknown_tags == {"Space Westerns": 1}
    labels = dict(zip(table["id"], table["labels"], strict=True))
    assert labels["a"] == "Drama"  # Horror removed from the labels
    assert "Horror" not in "|".join(table["labels"])


def test_title_whose_only_genre_lacks_support_is_removed() -> None:
    tax = Taxonomy.from_config(SMALL_TAXONOMY)
    batch = _rows(("a", "A", "Dramas"), ("b", "B", "Dramas"), ("h", "H", "Horror"))
    table, genres, stats = build_training_table([batch], tax)
    assert genres == ["Drama"]
    assert table["id"].tolist() == ["a", "b"]
    assert stats.rows_without_genre == 1
    assert stats.genres_below_min_support == ["Horror"]


def test_netflix_training_table(netflix: pd.DataFrame, taxonomy: Taxonomy) -> None:
    table, genres, stats = build_training_table([netflix], taxonomy)
    assert stats.input_rows == len(netflix)
    assert stats.duplicate_ids_replaced == 0
    assert stats.unknown_tags == {}
    assert stats.rows_without_genre == len(netflix) - len(table)
    assert stats.rows_without_genre / len(netflix) < 0.25
    assert genres == list(taxonomy.genres)  # all 18 genres have >= 50 titles
    assert table["id"].is_unique
    assert (table["labels"] != "").all()
    matrix = label_matrix(table["labels"], genres)
    assert matrix.shape == (len(table), len(genres))
    assert (matrix.sum(axis=0) >= taxonomy.min_support).all()


def test_label_matrix() -> None:
    labels = pd.Series(["Drama|Comedy", "", "Horror", "Comedy|Unlisted"])
    matrix = label_matrix(labels, ["Drama", "Comedy", "Horror"])
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert matrix.dtype == np.int8


# --- stable splits ----------------------------------------------------------------------


def test_splits_survive_added_and_shuffled_rows(netflix_table: pd.DataFrame) -> None:
    before = assign_splits(netflix_table, 0.1, 0.1, SALT)
    new = _rows(*[(f"new:{i}", f"New {i}", "Dramas") for i in range(500)])
    grown = pd.concat([netflix_table, new.assign(labels="Drama")], ignore_index=True)
    grown = grown.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert grown["id"].tolist()[:5] != netflix_table["id"].tolist()[:5]
    after = assign_splits(grown, 0.1, 0.1, SALT)
    assert len(after) == len(before) + 500
    old = dict(zip(before["id"], before["split"], strict=True))
    now = dict(zip(after["id"], after["split"], strict=True))
    moved = [i for i in old if now[i] != old[i]]
    assert moved == []
    new_splits = [now[f"new:{i}"] for i in range(500)]
    assert set(new_splits) == {"train", "val", "test"}


def test_split_fractions_on_netflix(netflix_table: pd.DataFrame) -> None:
    split = assign_splits(netflix_table, 0.1, 0.1, SALT)["split"]
    shares = split.value_counts(normalize=True)
    assert set(shares.index) == {"train", "val", "test"}
    assert shares["train"] == pytest.approx(0.80, abs=0.02)
    assert shares["val"] == pytest.approx(0.10, abs=0.02)
    assert shares["test"] == pytest.approx(0.10, abs=0.02)


def test_salt_changes_assignments(netflix_table: pd.DataFrame) -> None:
    a = assign_splits(netflix_table, 0.1, 0.1, SALT)["split"]
    b = assign_splits(netflix_table, 0.1, 0.1, SALT + "-v2")["split"]
    changed = float((a != b).mean())
    # independent 80/10/10 draws disagree on ~34% of rows
    assert 0.25 < changed < 0.45
    assert b.value_counts(normalize=True)["train"] == pytest.approx(0.80, abs=0.02)


def test_split_of_is_deterministic_and_nested() -> None:
    ids = [f"x:{i}" for i in range(2000)]
    first = [split_of(i, 0.1, 0.1, SALT) for i in ids]
    assert first == [split_of(i, 0.1, 0.1, SALT) for i in ids]
    # growing the test share only moves titles into test, never between train and val
    wider = [split_of(i, 0.1, 0.2, SALT) for i in ids]
    for old, new in zip(first, wider, strict=True):
        if old == "test":
            assert new == "test"


def test_title_splits_save_load(tmp_path: Path, netflix_table: pd.DataFrame) -> None:
    table = assign_splits(netflix_table.head(300), 0.1, 0.1, SALT)
    genres = ["Drama", "Comedy", "Documentary"]
    TitleSplits(table, genres).save(tmp_path)
    loaded = TitleSplits.load(tmp_path)
    assert loaded.genres == genres
    pd.testing.assert_frame_equal(loaded.table, table, check_dtype=False)
    counts = loaded.counts()
    assert sum(counts.values()) == 300
    assert len(loaded.texts("val")) == counts["val"]
    assert loaded.labels("train").shape == (counts["train"], 3)


@pytest.fixture(scope="module")
def ood_titles() -> pd.DataFrame:
    return read_titles(OOD.read_bytes(), OOD.name)


def test_taxonomy_knows_every_tag_of_the_other_platforms(ood_titles: pd.DataFrame,
                                                          taxonomy: Taxonomy) -> None:
    unknown = {tag for tags in ood_titles["genres"].unique()
               for tag in taxonomy.map_tags(tags.split("|"))[1]}
    assert unknown == set()
    assert taxonomy.map_tags(["Suspense", "Action", "Kids"])[0] == [
        "Action & Adventure", "Thriller", "Kids & Family"]


def test_out_of_distribution_rows_are_a_stable_labelled_sample(ood_titles: pd.DataFrame,
                                                               taxonomy: Taxonomy) -> None:
    genres = ["Drama", "Comedy", "Documentary", "Horror"]
    table = out_of_distribution_table(ood_titles, taxonomy, genres, 500, SALT)
    assert len(table) == 500 and set(table["split"]) == {"ood"}
    assert table["id"].is_unique and table["id"].is_monotonic_increasing
    labels = {g for joined in table["labels"] for g in joined.split("|")}
    assert labels <= set(genres) and "" not in set(table["labels"])
    assert set(table["source"]) == {"amazon_prime", "hulu", "disney_plus"}
    # A title's labels are its own tags mapped and kept within `genres`.
    row = table.iloc[0]
    mapped = taxonomy.map_tags(row["genres"].split("|"))[0]
    assert row["labels"] == "|".join(g for g in mapped if g in genres)
    # Same rows whatever the input order; a larger budget only adds rows.
    shuffled = out_of_distribution_table(ood_titles.sample(frac=1, random_state=3), taxonomy,
                                         genres, 500, SALT)
    assert shuffled["id"].tolist() == table["id"].tolist()
    larger = out_of_distribution_table(ood_titles, taxonomy, genres, 800, SALT)
    assert set(table["id"]) < set(larger["id"])
    splits = TitleSplits(table, genres)
    assert splits.counts() == {"train": 0, "val": 0, "test": 0, "ood": 500}
