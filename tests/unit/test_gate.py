"""The registration gate: first run, champion vs challenger, slices, genres, overrides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity

from trending_assets.ml.gate import (
    ChampionEvidence,
    Override,
    OverrideError,
    aligned_to,
    decide,
    gate_metrics,
    metric_value,
    rows_digest,
    value_criteria,
)
from trending_assets.settings import ConfigError, GateSettings, load_settings

GATE = GateSettings.model_validate({
    "min_macro_f1": 0.30, "min_micro_f1": 0.40,
    "genre_floor": {"min_support": 20, "min_f1": 0.15},
    "slices": [{"slice": "kind=movie", "min_macro_f1": 0.25, "min_micro_f1": 0.40},
               {"slice": "kind=tv", "min_macro_f1": 0.20},
               {"slice": "ood", "min_macro_f1": 0.10}],
    "champion": [{"metric": "macro_f1", "absolute": -0.005},
                 {"metric": "micro_f1", "relative": -0.01},
                 {"metric": "kind=movie/macro_f1", "absolute": -0.02},
                 {"metric": "kind=tv/macro_f1", "absolute": -0.02}],
    "promote_to": "production", "first_run_promote_to": "staging",
})


def metrics(macro: float = 0.49, micro: float = 0.59, movie: float = 0.42, tv: float = 0.37,
            genres: dict[str, tuple[float, int]] | None = None,
            ood: float | None = None) -> dict:
    """Evaluation-shaped metrics (overall, slices, per genre) turned into gate metrics."""
    def block(m: float, mi: float, n: int) -> dict:
        return {"macro_f1": m, "micro_f1": mi, "micro_precision": mi, "micro_recall": mi,
                "samples": n}

    genres = genres or {"Drama": (0.68, 295), "Comedy": (0.60, 232), "Thriller": (0.32, 62),
                        "LGBTQ": (0.05, 8)}
    overall = block(macro, micro, 859) | {"per_genre": {
        g: {"precision": f, "recall": f, "f1": f, "support": n} for g, (f, n) in genres.items()}}
    slices = {"kind=movie": block(movie, micro, 596), "kind=tv": block(tv, micro - 0.05, 263)}
    if ood is not None:
        slices["ood"] = block(ood, ood, 1000)
    return gate_metrics(overall, slices)


def champion(version: int = 1, **values) -> ChampionEvidence:
    return ChampionEvidence(version, metrics(**values), "recorded")


def by_name(blessing) -> dict:
    return {c.name: c for c in blessing.criteria}


def test_first_run_promotes_on_value_thresholds_alone() -> None:
    blessing = decide("trending-now-xgboost", "xgboost", metrics(), GATE, champion=None)
    assert blessing.decision == "promoted"
    assert blessing.policy == "first_run"
    assert blessing.aliases == ["staging"]  # first_run_promote_to
    assert "first run: no production champion, judged on value thresholds only" in (
        blessing.summary)
    assert {c.kind for c in blessing.criteria} == {"value", "slice", "genre"}
    assert blessing.champion is None
    criteria = by_name(blessing)
    assert criteria["macro_f1"].outcome == "pass"
    assert criteria["macro_f1"].reason == "macro_f1 0.490 >= 0.300"
    # the OOD set is not in this evaluation: stated, not judged
    assert criteria["ood/macro_f1"].outcome == "skipped"
    assert "slice 'ood' is not in this evaluation" in criteria["ood/macro_f1"].reason
    # LGBTQ (8 test titles) is below the floor's support: not judged
    assert criteria["genre_f1 (support >= 20)"].outcome == "pass"
    assert "lowest Thriller 0.320" in criteria["genre_f1 (support >= 20)"].reason

    production_first = GATE.model_copy(update={"first_run_promote_to": "production"})
    again = decide("m", "xgboost", metrics(), production_first, champion=None)
    assert again.aliases == ["staging", "production"]


def test_first_run_below_a_value_threshold_is_refused() -> None:
    blessing = decide("m", "xgboost", metrics(macro=0.21), GATE, champion=None)
    assert blessing.decision == "refused"
    assert blessing.aliases == []
    assert "macro_f1: macro_f1 0.210 < 0.300" in blessing.summary


def test_below_the_value_gate_is_never_registered_even_when_forced() -> None:
    """A candidate below its own floors is refused before any champion comparison can be
    overridden; one that only loses to the champion is still registered (no alias)."""
    below = decide("m", "xgboost", metrics(macro=0.21), GATE, champion(macro=0.49))
    assert below.value_refused and below.decision == "refused"
    assert below.first_reason == "macro_f1 0.210 < 0.300"
    assert below.champion["version"] == 1  # the champion it was compared with is kept
    assert "not registered (below the value gate)" in below.summary

    override = Override.requested(True, "launch", "alice", "m")
    forced = decide("m", "xgboost", metrics(macro=0.21), GATE, champion(macro=0.49), override)
    assert forced.decision == "refused" and forced.aliases == []
    assert forced.override["used"] is False
    assert "the override cannot force a candidate below the value gate" in forced.summary

    worse = decide("m", "xgboost", metrics(macro=0.45), GATE, champion(macro=0.49))
    assert worse.decision == "refused" and not worse.value_refused
    assert worse.first_reason.startswith("macro_f1 0.450 vs champion v1 0.490")


def test_better_challenger_is_promoted() -> None:
    blessing = decide("m", "xgboost", metrics(macro=0.51, micro=0.60, movie=0.44, tv=0.38),
                      GATE, champion(version=3))
    assert blessing.decision == "promoted"
    assert blessing.policy == "champion_challenger"
    assert blessing.aliases == ["staging", "production"]
    assert blessing.champion["version"] == 3
    change = by_name(blessing)["macro_f1 vs champion"]
    assert change.outcome == "pass"
    assert change.reason == ("macro_f1 0.510 vs champion v3 0.490: change +0.020 (+4.1%) "
                             "within bounds")
    assert "challenger vs production champion v3 (recorded on the same test rows)" in (
        blessing.summary)


def test_worse_challenger_is_refused_naming_criterion_and_numbers() -> None:
    blessing = decide("m", "xgboost", metrics(macro=0.45), GATE, champion(version=2))
    assert blessing.decision == "refused"
    assert blessing.aliases == []
    failed = [c.name for c in blessing.failed]
    assert failed == ["macro_f1 vs champion"]
    reason = blessing.failed[0].reason
    assert reason == ("macro_f1 0.450 vs champion v2 0.490: change -0.040 < allowed -0.005")
    assert "refused: 1 of" in blessing.summary
    assert reason in blessing.summary
    # a small regression inside the allowed bound still promotes
    assert decide("m", "xgboost", metrics(macro=0.487), GATE, champion()).promoted


def test_slice_regression_refuses_even_when_overall_improves() -> None:
    blessing = decide("m", "xgboost", metrics(macro=0.52, micro=0.62, tv=0.30), GATE,
                      champion(tv=0.37))
    assert blessing.decision == "refused"
    criteria = by_name(blessing)
    assert criteria["macro_f1 vs champion"].outcome == "pass"
    assert criteria["micro_f1 vs champion"].outcome == "pass"
    assert [c.name for c in blessing.failed] == ["kind=tv/macro_f1 vs champion"]
    assert blessing.failed[0].reason == (
        "kind=tv/macro_f1 0.300 vs champion v1 0.370: change -0.070 < allowed -0.020")


def test_slice_value_floor_refuses_even_when_overall_improves() -> None:
    blessing = decide("m", "xgboost", metrics(macro=0.55, movie=0.20), GATE,
                      champion(movie=0.21))
    assert blessing.decision == "refused"
    assert [c.name for c in blessing.failed] == ["kind=movie/macro_f1"]
    assert blessing.failed[0].reason == "kind=movie/macro_f1 0.200 < 0.250"


def test_required_slice_missing_fails() -> None:
    gate = GATE.model_copy(update={"slices": (
        GATE.slices[0], GATE.slices[1],
        GATE.slices[2].model_copy(update={"required": True}))})
    blessing = decide("m", "xgboost", metrics(), gate, champion=None)
    assert [c.name for c in blessing.failed] == ["ood/macro_f1"]
    assert "is required" in blessing.failed[0].reason
    with_ood = decide("m", "xgboost", metrics(ood=0.31), gate, champion=None)
    assert with_ood.promoted
    assert by_name(with_ood)["ood/macro_f1"].reason == "ood/macro_f1 0.310 >= 0.100"


def test_genre_floor_names_each_weak_genre() -> None:
    genres = {"Drama": (0.68, 295), "Thriller": (0.12, 62), "Horror": (0.10, 45),
              "LGBTQ": (0.01, 8)}
    criterion = by_name(decide("m", "xgboost", metrics(genres=genres), GATE, None))[
        "genre_f1 (support >= 20)"]
    assert criterion.outcome == "fail"
    assert criterion.observed == pytest.approx(0.10)
    assert criterion.reason == ("2 of 3 genres below F1 0.150: Horror 0.100 (n=45), "
                                "Thriller 0.120 (n=62)")


def test_relative_and_lower_is_better_changes() -> None:
    gate = GATE.model_copy(update={"champion": (
        GATE.champion[1],  # micro_f1 may drop at most 1% (relative)
        GATE.champion[0].model_copy(update={"metric": "micro_recall",
                                            "direction": "lower_is_better",
                                            "absolute": 0.0}),
    )})
    # micro 0.59 -> 0.5801 is a 1.7% drop; micro_recall (same number here) went down, which
    # "lower is better" counts as an improvement
    blessing = decide("m", "xgboost", metrics(micro=0.58), gate, champion(micro=0.59))
    criteria = by_name(blessing)
    assert criteria["micro_f1 vs champion"].outcome == "fail"
    assert "relative change -1.7% < allowed -1.0%" in criteria["micro_f1 vs champion"].reason
    assert criteria["micro_recall vs champion"].outcome == "pass"


def test_forced_promotion_needs_reason_and_author() -> None:
    with pytest.raises(OverrideError, match="needs a non-empty reason") as info:
        Override.requested(True, "  ", "alice", "trending-now-xgboost")
    assert "trending-now-xgboost" in str(info.value)
    assert "nothing was registered" in str(info.value)
    with pytest.raises(OverrideError, match="needs a non-empty reason and author"):
        Override.requested(True, "", "", "m")
    with pytest.raises(OverrideError, match="needs a non-empty author"):
        Override.requested(True, "holiday launch", "", "m")
    assert Override.requested(False, "", "", "m") is None


def test_forced_promotion_is_recorded() -> None:
    override = Override.requested(True, " holiday launch, fixed next week ", "alice", "m")
    blessing = decide("m", "xgboost", metrics(macro=0.45), GATE, champion(), override)
    assert blessing.decision == "promoted"
    assert blessing.aliases == ["staging", "production"]
    assert blessing.override == {"author": "alice", "reason": "holiday launch, fixed next week",
                                 "used": True, "overridden": ["macro_f1 vs champion"]}
    assert "FORCED promotion to production by alice (holiday launch, fixed next week)" in (
        blessing.summary)
    markdown = blessing.to_markdown()
    assert "Override: forced by **alice**" in markdown
    # an override on a candidate that passes anyway is recorded as not needed
    fine = decide("m", "xgboost", metrics(macro=0.50), GATE, champion(), override)
    assert fine.override["used"] is False
    assert "not needed" in fine.summary


def test_blessing_markdown_shows_criteria_and_candidate_vs_champion() -> None:
    blessing = decide("trending-now-bert", "bert", metrics(macro=0.45), GATE, champion(4))
    text = blessing.to_markdown()
    assert text.startswith("# Blessing: trending-now-bert\n")
    assert "**Decision: REFUSED**" in text
    assert ("| macro_f1 vs champion | 0.450 | change >= -0.005 (higher is better) | **FAIL** "
            "| macro_f1 0.450 vs champion v4 0.490: change -0.040 < allowed -0.005 |") in text
    assert "| macro_f1 | 0.450 | 0.490 | -0.040 |" in text
    assert "| kind=tv/macro_f1 | 0.370 | 0.370 | +0.000 |" in text
    data = blessing.to_dict()
    assert data["criteria"][0] == {"name": "macro_f1", "kind": "value", "observed": 0.45,
                                   "threshold": ">= 0.300", "outcome": "pass",
                                   "reason": "macro_f1 0.450 >= 0.300"}


def test_metric_paths_and_value_criteria() -> None:
    m = metrics()
    assert metric_value(m, "macro_f1") == pytest.approx(0.49)
    assert metric_value(m, "kind=tv/macro_f1") == pytest.approx(0.37)
    assert metric_value(m, "ood/macro_f1") is None
    names = [c.name for c in value_criteria(m, GATE)]
    assert names == ["macro_f1", "micro_f1", "kind=movie/macro_f1", "kind=movie/micro_f1",
                     "kind=tv/macro_f1", "ood/macro_f1", "genre_f1 (support >= 20)"]


def test_gate_settings_reject_bad_metrics(tmp_path) -> None:
    with pytest.raises(ValueError, match="metric 'f1': use one of macro_f1"):
        GateSettings.model_validate({"min_macro_f1": 0.3, "min_micro_f1": 0.4,
                                     "champion": [{"metric": "f1", "absolute": 0}]})
    with pytest.raises(ValueError, match="set `absolute`, `relative` or both"):
        GateSettings.model_validate({"min_macro_f1": 0.3, "min_micro_f1": 0.4,
                                     "champion": [{"metric": "macro_f1"}]})
    with pytest.raises(ConfigError, match=r"key 'gates\.xgboost'.*slices: each slice may "
                                         r"appear once"):
        load_settings("local", overrides={"gates": {"xgboost": {"slices": [
            {"slice": "kind=tv"}, {"slice": "kind=tv"}]}}})


def test_shipped_gates_are_valid_and_stricter_in_production() -> None:
    local, production = load_settings("local"), load_settings("production")
    assert local.gates.xgboost.first_run_promote_to == "production"
    assert production.gates.xgboost.first_run_promote_to == "staging"
    for family in ("xgboost", "bert"):
        ours, prod = getattr(local.gates, family), getattr(production.gates, family)
        assert [s.slice for s in ours.slices] == ["kind=movie", "kind=tv", "ood"]
        assert prod.genre_floor.min_f1 > ours.genre_floor.min_f1
        for a, b in zip(ours.slices, prod.slices, strict=True):
            assert (b.min_macro_f1 or 0) >= (a.min_macro_f1 or 0)
        assert [c.metric for c in prod.champion] == [c.metric for c in ours.champion]


def test_rows_digest_follows_the_evaluated_rows() -> None:
    table = pd.DataFrame({
        "id": ["a", "b", "c", "d"], "split": ["train", "val", "test", "test"],
        "kind": ["movie", "tv", "movie", "tv"], "description": ["w", "x", "y", "z"],
        "labels": ["Drama", "Comedy", "Drama", "Drama|Comedy"]})
    digest = rows_digest(table, ["Drama", "Comedy"])
    assert rows_digest(table.iloc[::-1], ["Drama", "Comedy"]) == digest  # order-free
    assert rows_digest(table.assign(description=["changed", "x", "y", "z"]),
                       ["Drama", "Comedy"]) == digest  # train rows are not evaluated
    assert rows_digest(table.assign(labels=["Drama", "Comedy", "Comedy", "Drama|Comedy"]),
                       ["Drama", "Comedy"]) != digest
    grown = pd.concat([table, table.iloc[[2]].assign(id="e")])
    assert rows_digest(grown, ["Drama", "Comedy"]) != digest
    assert rows_digest(table, ["Drama", "Comedy", "Horror"]) != digest


def test_aligned_to_reorders_and_zero_fills_genres() -> None:
    class Fixed:
        genres = ("Drama", "Comedy")

        def predict_proba(self, texts):
            return np.array([[0.9, 0.2]] * len(texts), dtype=np.float32)

    model = Fixed()
    assert aligned_to(model, ["Drama", "Comedy"]) is model
    moved = aligned_to(model, ["Comedy", "Horror", "Drama"])
    np.testing.assert_allclose(moved.predict_proba(["a", "b"]),
                               [[0.2, 0.0, 0.9], [0.2, 0.0, 0.9]])


def test_meets_thresholds_check_reads_the_whole_value_gate() -> None:
    """The `<family>_meets_thresholds` check: slice and genre floors included; a failure
    is a WARN (the registration refuses the candidate; the run goes on)."""
    from trending_assets.checks.model_gates import gate_result
    from trending_assets.ml.report import EvaluationResult

    m = metrics(movie=0.20)
    per_genre = {g: {"precision": v["f1"], "recall": v["f1"], **v}
                 for g, v in m["per_genre"].items()}
    result = EvaluationResult(
        model_name="xgboost", genres=list(per_genre), thresholds=dict.fromkeys(per_genre, 0.5),
        overall=m["overall"] | {"per_genre": per_genre}, slices=m["slices"],
        validation=m["overall"] | {"per_genre": per_genre})
    check = gate_result("xgboost", result, GATE)
    assert check.check_name == "xgboost_meets_thresholds"
    assert not check.passed
    assert check.severity == AssetCheckSeverity.WARN
    assert check.description == "kind=movie/macro_f1 0.200 < 0.250"
    assert check.metadata["failed"].value == ["kind=movie/macro_f1"]
    assert check.metadata["min_macro_f1"].value == 0.30
    assert "| kind=movie/macro_f1 | 0.200 | >= 0.250 | **FAIL** |" in (
        check.metadata["criteria"].value)
    assert gate_result("xgboost", result, GATE.model_copy(update={"slices": ()})).passed


def test_blessing_names_genres_the_champion_cannot_predict() -> None:
    evidence = ChampionEvidence(2, metrics(), "re-scored", ("Anime", "Horror"))
    blessing = decide("m", "xgboost", metrics(macro=0.50), GATE, evidence)
    assert blessing.champion["missing_genres"] == ["Anime", "Horror"]
    assert ("It does not predict Anime, Horror (new since it was trained): those count as "
            "F1 0 for it.") in blessing.to_markdown()


def test_forced_first_run_goes_as_far_as_the_gate_promotes() -> None:
    """The first production model is a person's call: an override on a first run that
    passes its value thresholds promotes to production (not only the first-run staging)."""
    override = Override.requested(True, "first launch", "bob", "m")
    blessing = decide("m", "xgboost", metrics(), GATE, None, override)
    assert blessing.aliases == ["staging", "production"]
    assert blessing.override["used"] is True
    assert blessing.override["overridden"] == []
    assert ("FORCED promotion to production by bob (first launch) beyond the first-run target "
            "staging") in blessing.summary
