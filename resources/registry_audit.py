"""Checking and repairing the model registry (`python -m trending_assets.cli registry ...`).

`audit` reads every version record, sha256-checks every file and document it lists, replays
the alias log and lists the blobs no record names. What it calls a problem:
- a file that is missing or fails its sha256 check (it cannot be restored from here: the
  next registration with identical files replaces it, else a backup must);
- an alias held by a version whose files fail (repair moves the alias back to the newest
  earlier holder whose files verify);
- a record whose registration stopped before its commit event (repair commits it: its alias
  moves apply only if the aliases still point where its decision assumed);
- a blob no record names (left by a killed write; repair deletes it);
- an event naming a version that has no record.
Records and blobs younger than the grace period may belong to a registration in flight:
they are reported as such and left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from resources.io_manager import ArtifactIntegrityError
from resources.registry import AliasConflictError, ModelRegistry
from resources.storage import ArtifactNotFoundError


@dataclass(frozen=True)
class Finding:
    model: str
    # damaged_file | damaged_holder | uncommitted | orphan_blob | dangling_event | unreadable
    kind: str
    detail: str
    fixable: bool
    version: int | None = None
    key: str | None = None  # the blob or record the finding is about
    alias: str | None = None
    fallback: int | None = None  # damaged_holder: where repair moves the alias

    def line(self) -> str:
        where = f"{self.model} v{self.version}" if self.version is not None else self.model
        return f"{where}: {self.detail}" + ("" if self.fixable else " [repair cannot fix this]")


@dataclass
class Audit:
    findings: list[Finding] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)  # younger than the grace period
    versions_checked: int = 0
    models: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _models(registry: ModelRegistry) -> list[str]:
    """Every model with anything stored (a model whose only write was a blob included)."""
    return sorted({k.split("/")[1] for k in registry.store.list_keys("registry/")
                   if k.count("/") >= 2})


def _age(registry: ModelRegistry, key: str, now: datetime) -> timedelta:
    return now - registry.store.modified_at(key)


def _file_problems(registry: ModelRegistry, model: str, version: int,
                   record: dict[str, Any]) -> list[str]:
    """One line per listed file or document that is missing or fails its sha256 check."""
    problems = []
    for group in ("files", "documents"):
        for name, info in record.get(group, {}).items():
            try:
                registry.check_files(model, version, {group: {name: info}})
            except (ArtifactIntegrityError, ArtifactNotFoundError) as exc:
                problems.append(str(exc))
    return problems


def audit(registry: ModelRegistry, grace: timedelta, now: datetime | None = None) -> Audit:
    now = now or datetime.now(UTC)
    result = Audit(models=_models(registry))
    for model in result.models:
        _audit_model(registry, model, grace, now, result)
    return result


def _audit_model(registry: ModelRegistry, model: str, grace: timedelta, now: datetime,
                 result: Audit) -> None:
    records: dict[int, dict[str, Any]] = {}
    for number in registry.record_numbers(model):
        try:
            records[number] = registry.raw_record(model, number)
        except (ValueError, ArtifactNotFoundError) as exc:
            result.findings.append(Finding(model, "unreadable", f"record unreadable: {exc}",
                                           False, number))
    commits = registry.commits(model)
    damaged: dict[int, list[str]] = {}
    for number, record in records.items():
        problems = _file_problems(registry, model, number, record)
        if problems:
            damaged[number] = problems
        committed = number in commits or record.get("commit") is None
        if committed:
            result.versions_checked += 1
            result.findings += [Finding(model, "damaged_file", p.split(": ", 1)[1], False,
                                        number) for p in problems]
            continue
        key = registry.version_key(model, number)
        if _age(registry, key, now) < grace:
            result.in_flight.append(f"{model} v{number}: registration in progress (record "
                                    "written, not committed yet)")
            continue
        result.findings.append(Finding(
            model, "uncommitted",
            "the registration stopped after writing the record and before committing its "
            "decision; readers do not see it" + (f"; its files fail: {'; '.join(problems)}"
                                                 if problems else ""),
            not problems, number, key))
    history = registry.alias_history(model)
    for version in sorted({e["version"] for e in history} | set(commits)):
        if version not in records:
            result.findings.append(Finding(model, "dangling_event",
                                           "the alias log names this version but it has no "
                                           "record", False, version))
    for alias, version in sorted(registry.aliases(model).items()):
        if version in damaged:
            fallback = _fallback(history, alias, version, damaged, records)
            result.findings.append(Finding(
                model, "damaged_holder",
                f"alias {alias!r} points at v{version}, whose files fail verification; "
                + (f"repair moves it back to v{fallback}" if fallback else
                   "no earlier holder of it verifies"),
                fallback is not None, version, alias=alias, fallback=fallback))
    named = {info["sha256"] for record in records.values()
             for group in ("files", "documents") for info in record.get(group, {}).values()}
    for key in registry.store.list_keys(f"registry/{model}/blobs/"):
        if key.rsplit("/", 1)[1] in named:
            continue
        age = _age(registry, key, now)
        if age < grace:
            result.in_flight.append(f"{model}: blob {key} named by no record yet "
                                    f"({age.total_seconds():.0f}s old, within the grace period)")
        else:
            result.findings.append(Finding(model, "orphan_blob",
                                           f"blob {key} is named by no version record", True,
                                           key=key))


def _fallback(history: list[dict[str, Any]], alias: str, damaged_version: int,
              damaged: dict[int, list[str]], records: dict[int, dict[str, Any]]) -> int | None:
    """The newest earlier holder of `alias` whose files verify."""
    for event in reversed(history):
        version = event["version"]
        if (event["alias"] == alias and version != damaged_version and version in records
                and version not in damaged):
            return version
    return None


@dataclass
class Repair:
    fixed: list[str]
    before: Audit
    after: Audit


def repair(registry: ModelRegistry, grace: timedelta, now: datetime | None = None) -> Repair:
    """Fix what audit calls fixable; audit again. Interrupted registrations are committed
    first (that may move aliases), then aliases are moved off damaged holders and orphan
    blobs deleted on a fresh audit. Every step is one write, so a repair killed midway is
    finished by the next one."""
    now = now or datetime.now(UTC)
    before = audit(registry, grace, now)
    fixed = []
    for finding in before.findings:
        if finding.kind == "uncommitted" and finding.fixable:
            event = registry.commit(finding.model, finding.version)
            moved = ", ".join(m["alias"] for m in event["moves"])
            fixed.append(f"{finding.model} v{finding.version}: committed"
                         + (f", moved {moved}" if moved else ", no alias moved")
                         + (f" ({event['conflict']})" if event["conflict"] else ""))
    middle = audit(registry, grace, now) if fixed else before
    for finding in middle.findings:
        if not finding.fixable:
            continue
        model, version = finding.model, finding.version
        if finding.kind == "orphan_blob":
            fixed.append(_collect(registry, model, finding.key, grace, now))
        elif finding.kind == "damaged_holder":
            try:
                registry.move_alias(model, finding.alias, finding.fallback,
                                    f"repair: v{version}'s files fail verification",
                                    expected=version, conditional=True)
            except AliasConflictError:  # moved by someone else meanwhile: audit tells
                continue
            fixed.append(f"{model}: alias {finding.alias!r} moved from v{version} (damaged) "
                         f"back to v{finding.fallback}")
    return Repair(fixed, before, audit(registry, grace, datetime.now(UTC)))


def _collect(registry: ModelRegistry, model: str, key: str, grace: timedelta,
             now: datetime) -> str:
    """Delete an orphan blob, checking again just before that no record names it now."""
    digest = key.rsplit("/", 1)[1]
    for number in registry.record_numbers(model):
        record = registry.raw_record(model, number)
        if any(info["sha256"] == digest for group in ("files", "documents")
               for info in record.get(group, {}).values()):
            return f"{model}: blob {key} is named by v{number} now; kept"
    if _age(registry, key, now) < grace:
        return f"{model}: blob {key} was rewritten meanwhile; kept"
    registry.store.delete(key)
    return f"{model}: deleted orphan blob {key}"


def print_audit(result: Audit, uri: str, out: Callable[[str], None]) -> None:
    out(f"registry at {uri}: {len(result.models)} model(s), {result.versions_checked} "
        "version(s) checked")
    for note in result.in_flight:
        out(f"in flight (left alone): {note}")
    for finding in result.findings:
        out(f"PROBLEM {finding.line()}")
    out("no problems" if result.ok else f"{len(result.findings)} problem(s)")


def registry_command(registry: ModelRegistry, action: str, grace: timedelta,
                     out: Callable[[str], None] = print) -> int:
    """`registry verify` (exit 1 when something is wrong) or `registry repair` (exit 1 when
    something is left that repair cannot fix)."""
    uri = registry.store.uri_of("registry")
    if action == "verify":
        result = audit(registry, grace)
        print_audit(result, uri, out)
        return 0 if result.ok else 1
    done = repair(registry, grace)
    for line in done.fixed:
        out(f"fixed: {line}")
    if not done.fixed:
        out("nothing to fix")
    print_audit(done.after, uri, out)
    return 0 if done.after.ok else 1

