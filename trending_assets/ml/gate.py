"""The registration gate: value thresholds, change against the champion, and the blessing.

A candidate model is judged on its test metrics (overall, per slice, per genre) against
value thresholds, and, when a production champion exists, against the champion's metrics
on exactly the same test rows. Every criterion is kept with its observed value, threshold,
outcome and a one-line reason; the blessing is the decision with all of them, stored with
the registry version. A forced promotion needs a reason and an author and is recorded as
such.

Plain Python: the gate settings are read duck-typed (see trending_assets/settings/gates.py,
GateSettings), metrics are plain dicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from trending_assets.ml.markdown import md_cell, md_table, md_text, md_value, numbers_right

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
# Criteria on the candidate alone (the value gate); "change" compares it with the champion.
VALUE_KINDS = ("value", "slice", "genre")
METRICS = ("macro_f1", "micro_f1", "micro_precision", "micro_recall")
ALIASES_FOR = {"staging": ["staging"], "production": ["staging", "production"]}


class OverrideError(ValueError):
    """A forced promotion was requested without the reason and author it needs."""


@dataclass(frozen=True)
class Criterion:
    """One line of the blessing: what was measured, against what, and the outcome."""

    name: str
    kind: str  # value | slice | genre | change
    observed: float | None
    threshold: str  # human-readable bound, e.g. ">= 0.300" or "change >= -0.005"
    outcome: str  # pass | fail | skipped
    reason: str

    @property
    def failed(self) -> bool:
        return self.outcome == FAIL


@dataclass(frozen=True)
class Override:
    """An audited forced promotion: who asked and why."""

    author: str
    reason: str

    @classmethod
    def requested(cls, force: bool, reason: str, author: str, model: str) -> Override | None:
        """The override a run asked for, or None; raises OverrideError when it is incomplete."""
        if not force:
            return None
        missing = [name for name, value in (("reason", reason), ("author", author))
                   if not value.strip()]
        if missing:
            raise OverrideError(
                f"forced promotion of {model} refused: it needs a non-empty "
                f"{' and '.join(missing)} (run config: force_promotion: true, "
                "reason: '<why this model must ship>', author: '<who decides>'); nothing was "
                "registered")
        return cls(author=author.strip(), reason=reason.strip())


@dataclass(frozen=True)
class ChampionEvidence:
    """The production champion's metrics on the candidate's test rows."""

    version: int
    metrics: dict[str, Any]
    source: str  # "recorded" (same rows) or "re-scored" (loaded from the registry)
    # Genres the candidate is trained on that the champion never predicts (scored as 0).
    missing_genres: tuple[str, ...] = ()


@dataclass
class Blessing:
    """The decision on one candidate, with every criterion; stored with its registry version."""

    model: str
    family: str
    decision: str  # promoted | refused
    aliases: list[str]
    summary: str
    policy: str  # first_run | champion_challenger
    criteria: list[Criterion]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None = None
    override: dict[str, Any] | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    @property
    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if c.failed]

    @property
    def value_refused(self) -> bool:
        """Refused on its own value (not against the champion): it is never registered."""
        return any(c.kind in VALUE_KINDS for c in self.failed)

    @property
    def first_reason(self) -> str:
        """What a one-line summary says: the first failed criterion's reason."""
        return self.failed[0].reason if self.failed else self.summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        return blessing_markdown(self.to_dict())


# --- metrics ----------------------------------------------------------------------------


def gate_metrics(overall: Mapping[str, Any], slices: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, Any]:
    """What the gate reads from an evaluation: headline metrics overall and per slice, and
    F1 with support per genre (overall)."""
    def headline(m: Mapping[str, Any]) -> dict[str, Any]:
        return {k: float(m[k]) for k in METRICS if k in m} | {"samples": int(m["samples"])}

    return {
        "overall": headline(overall),
        "slices": {name: headline(m) for name, m in slices.items()},
        "per_genre": {g: {"f1": float(m["f1"]), "support": int(m["support"])}
                      for g, m in overall["per_genre"].items()},
    }


def metric_value(metrics: Mapping[str, Any], path: str) -> float | None:
    """`macro_f1` or `<slice>/macro_f1`; None when the slice or metric is absent."""
    slice_name, _, metric = path.rpartition("/")
    scope = metrics["slices"].get(slice_name) if slice_name else metrics["overall"]
    if scope is None or metric not in scope:
        return None
    return float(scope[metric])


def rows_digest(table: pd.DataFrame, genres: Sequence[str]) -> str:
    """Content hash of what an evaluation reads: validation and test rows (id, synopsis,
    labels, kind, split) and the genre list. Equal digests mean equal evaluations."""
    rows = table[table["split"].isin(["val", "test"])]
    rows = rows[["id", "split", "kind", "description", "labels"]].sort_values("id")
    hashed = pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()
    return hashlib.sha256(hashed + "|".join(genres).encode()).hexdigest()[:16]


class _GenreAligned:
    """A model's probabilities reordered to another genre list; genres it does not know
    get probability 0 (it never predicts them)."""

    def __init__(self, model: Any, genres: Sequence[str]) -> None:
        self.model, self.genres = model, list(genres)
        known = {g: j for j, g in enumerate(model.genres)}
        self._columns = [(j, known[g]) for j, g in enumerate(self.genres) if g in known]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probs = np.asarray(self.model.predict_proba(texts))
        out = np.zeros((probs.shape[0], len(self.genres)), dtype=np.float32)
        for ours, theirs in self._columns:
            out[:, ours] = probs[:, theirs]
        return out


def aligned_to(model: Any, genres: Sequence[str]) -> Any:
    """`model` scoring `genres` in that order (the champion may know other genres)."""
    return model if list(model.genres) == list(genres) else _GenreAligned(model, genres)


# --- criteria ---------------------------------------------------------------------------


def _floor(name: str, kind: str, observed: float | None, floor: float) -> Criterion:
    if observed is None:
        return Criterion(name, kind, None, f">= {floor:.3f}", FAIL,
                         f"{name} was not measured")
    ok = observed >= floor
    return Criterion(name, kind, observed, f">= {floor:.3f}", PASS if ok else FAIL,
                     f"{name} {observed:.3f} {'>=' if ok else '<'} {floor:.3f}")


def value_criteria(metrics: Mapping[str, Any], gate: Any) -> list[Criterion]:
    """Value thresholds: overall floors, per-slice floors, and the per-genre F1 floor."""
    overall = metrics["overall"]
    criteria = [_floor("macro_f1", "value", overall.get("macro_f1"), gate.min_macro_f1),
                _floor("micro_f1", "value", overall.get("micro_f1"), gate.min_micro_f1)]
    for slice_gate in gate.slices:
        observed = metrics["slices"].get(slice_gate.slice)
        floors = [(m, getattr(slice_gate, f"min_{m}")) for m in ("macro_f1", "micro_f1")]
        for metric, floor in floors:
            if floor is None:
                continue
            name = f"{slice_gate.slice}/{metric}"
            if observed is None or observed.get("samples", 0) == 0:
                outcome = FAIL if slice_gate.required else SKIPPED
                criteria.append(Criterion(
                    name, "slice", None, f">= {floor:.3f}", outcome,
                    f"slice {slice_gate.slice!r} is not in this evaluation"
                    + (" and is required" if slice_gate.required else "; not judged")))
            else:
                criteria.append(_floor(name, "slice", float(observed[metric]), floor))
    if gate.genre_floor is not None:
        criteria.append(_genre_floor(metrics["per_genre"], gate.genre_floor))
    return criteria


def _genre_floor(per_genre: Mapping[str, Mapping[str, Any]], floor: Any) -> Criterion:
    name = f"genre_f1 (support >= {floor.min_support})"
    threshold = f">= {floor.min_f1:.3f}"
    judged = {g: m for g, m in per_genre.items() if m["support"] >= floor.min_support}
    if not judged:
        return Criterion(name, "genre", None, threshold, SKIPPED,
                         f"no genre has {floor.min_support} or more test titles; not judged")
    worst = min(judged, key=lambda g: (judged[g]["f1"], g))
    below = sorted((g for g, m in judged.items() if m["f1"] < floor.min_f1),
                   key=lambda g: judged[g]["f1"])
    observed = judged[worst]["f1"]
    if below:
        listed = ", ".join(f"{g} {judged[g]['f1']:.3f} (n={judged[g]['support']})"
                           for g in below)
        return Criterion(name, "genre", observed, threshold, FAIL,
                         f"{len(below)} of {len(judged)} genres below F1 {floor.min_f1:.3f}: "
                         f"{listed}")
    return Criterion(name, "genre", observed, threshold, PASS,
                     f"all {len(judged)} genres at F1 >= {floor.min_f1:.3f}; lowest {worst} "
                     f"{observed:.3f}")


def change_criteria(candidate: Mapping[str, Any], champion: ChampionEvidence,
                    thresholds: Sequence[Any]) -> list[Criterion]:
    """Change thresholds against the champion on the same rows (absolute and relative)."""
    criteria = []
    for rule in thresholds:
        name = f"{rule.metric} vs champion"
        ours = metric_value(candidate, rule.metric)
        theirs = metric_value(champion.metrics, rule.metric)
        bounds = [f"change >= {rule.absolute:+.3f}"] if rule.absolute is not None else []
        if rule.relative is not None:
            bounds.append(f"relative change >= {rule.relative:+.1%}")
        bound = " and ".join(bounds) + f" ({rule.direction.replace('_', ' ')})"
        if ours is None or theirs is None:
            criteria.append(Criterion(name, "change", ours, bound, SKIPPED,
                                      f"{rule.metric} is missing for the "
                                      f"{'candidate' if ours is None else 'champion'}; "
                                      "not judged"))
            continue
        change = ours - theirs if rule.direction == "higher_is_better" else theirs - ours
        problems = []
        if rule.absolute is not None and change < rule.absolute:
            problems.append(f"change {change:+.3f} < allowed {rule.absolute:+.3f}")
        relative = change / abs(theirs) if theirs else None
        if rule.relative is not None:
            if relative is None:
                if change < 0:
                    problems.append("champion is 0: any loss fails the relative bound")
            elif relative < rule.relative:
                problems.append(f"relative change {relative:+.1%} < allowed {rule.relative:+.1%}")
        shown = f"{rule.metric} {ours:.3f} vs champion v{champion.version} {theirs:.3f}"
        if problems:
            reason = f"{shown}: {'; '.join(problems)}"
        else:
            reason = f"{shown}: change {change:+.3f}" + (
                f" ({relative:+.1%})" if relative is not None else "") + " within bounds"
        criteria.append(Criterion(name, "change", ours, bound, FAIL if problems else PASS,
                                  reason))
    return criteria


# --- the decision -----------------------------------------------------------------------


def decide(model: str, family: str, candidate: Mapping[str, Any], gate: Any,
           champion: ChampionEvidence | None, override: Override | None = None) -> Blessing:
    """The blessing: value thresholds always; change thresholds when a champion exists.

    Promoted candidates get `staging` (and `production` when the gate promotes that far);
    a refused one gets no alias unless an audited override forces the promotion."""
    criteria = value_criteria(candidate, gate)
    if champion is None:
        policy, natural = "first_run", gate.first_run_promote_to
        preface = "first run: no production champion, judged on value thresholds only; "
    else:
        policy, natural = "champion_challenger", gate.promote_to
        criteria += change_criteria(candidate, champion, gate.champion)
        preface = (f"challenger vs production champion v{champion.version} "
                   f"({champion.source} on the same test rows); ")
    failed = [c for c in criteria if c.failed]
    passed = sum(c.outcome == PASS for c in criteria)
    # An override forces past the champion comparison only: a candidate below its own value
    # floors is never registered, so there is nothing to promote.
    value_failed = any(c.kind in VALUE_KINDS for c in failed)
    # An override promotes as far as the gate ever does (a first model to production too).
    target = natural if override is None else gate.promote_to
    forced = override is not None and not value_failed and (bool(failed) or target != natural)
    if failed and (override is None or value_failed):
        decision, aliases = "refused", []
        summary = (f"{preface}refused: {len(failed)} of {len(criteria)} criteria failed: "
                   + "; ".join(f"{c.name}: {c.reason}" for c in failed)
                   + ("; not registered (below the value gate)" if value_failed else "")
                   + ("; the override cannot force a candidate below the value gate"
                      if override is not None and value_failed else ""))
    elif forced:
        decision, aliases = "promoted", ALIASES_FOR[target]
        why = (f"despite {len(failed)} failed: {', '.join(c.name for c in failed)}" if failed
               else f"beyond the first-run target {natural}; all {passed} judged criteria "
                    "passed")
        summary = (f"{preface}FORCED promotion to {target} by {override.author} "
                   f"({override.reason}) {why}")
    else:
        decision, aliases = "promoted", ALIASES_FOR[target]
        summary = (f"{preface}promoted to {target}: all {passed} judged criteria passed"
                   + (f" (forced promotion requested by {override.author}, not needed)"
                      if override else ""))
    record = None if override is None else {
        "author": override.author, "reason": override.reason, "used": forced,
        "overridden": [c.name for c in failed]}
    return Blessing(
        model=model, family=family, decision=decision, aliases=list(aliases), summary=summary,
        policy=policy, criteria=criteria, candidate=dict(candidate),
        champion=None if champion is None else {
            "version": champion.version, "source": champion.source,
            "metrics": champion.metrics, "missing_genres": list(champion.missing_genres)},
        override=record,
    )


# --- presentation -----------------------------------------------------------------------


def criteria_markdown(criteria: Sequence[Mapping[str, Any]]) -> list[str]:
    marks = {"pass": "pass", "fail": "**FAIL**", "skipped": "skipped"}
    return md_table(("criterion", "observed", "threshold", "result", "reason"),
                    [(c["name"], md_value(c["observed"]), md_value(c["threshold"]),
                      marks[c["outcome"]], md_value(c["reason"])) for c in criteria],
                    ("---", "---:", "---", "---", "---"))


def blessing_markdown(blessing: Mapping[str, Any]) -> str:
    """The blessing as the UI shows it: decision, criteria table, candidate vs champion."""
    lines = [f"# Blessing: {blessing['model']}", "",
             f"**Decision: {blessing['decision'].upper()}**"
             + (f" -> aliases {', '.join(blessing['aliases'])}" if blessing["aliases"] else ""),
             "", md_text(blessing["summary"]), ""]
    if blessing.get("override"):
        o = blessing["override"]
        lines += [f"Override: forced by **{md_cell(o['author'])}**: {md_cell(o['reason'])}"
                  + ("" if o["used"] else " (not needed: every criterion passed)"), ""]
    lines += ["## Criteria", "", *criteria_markdown(blessing["criteria"]), ""]
    champion = blessing.get("champion")
    lines += ["## Candidate vs champion (test)", ""]
    if champion is None:
        lines += ["No production champion: this is a first run.", ""]
    else:
        lines += [f"Champion v{champion['version']}, metrics {champion['source']} on the "
                  "candidate's test rows."
                  + (f" It does not predict {', '.join(champion['missing_genres'])} (new "
                     "since it was trained): those count as F1 0 for it."
                     if champion.get("missing_genres") else ""), ""]
    candidate = blessing["candidate"]
    scopes = [("", candidate["overall"])] + [(f"{s}/", m) for s, m in
                                             sorted(candidate["slices"].items())]
    rows = []
    for prefix, values in scopes:
        for metric in ("macro_f1", "micro_f1"):
            if metric not in values:
                continue
            ours = float(values[metric])
            theirs = None if champion is None else metric_value(champion["metrics"],
                                                                 prefix + metric)
            change = None if theirs is None else ours - theirs
            rows.append((prefix + metric, md_value(ours), md_value(theirs),
                         md_value(change, signed=True)))
    lines += [*md_table(("metric", "candidate", "champion", "change"), rows,
                        numbers_right(4)), ""]
    return "\n".join(lines)
