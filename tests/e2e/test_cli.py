"""`make run`'s command: seeds the landing area once, ingests only new files, prints a summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from resources.registry import ModelRegistry
from resources.storage import LocalArtifactStore
from tests.conftest import write_test_configs
from tests.helpers import REPO
from trending_assets.ml.xgboost_model import BOOSTER_FILE, XGBoostGenreModel


def cli_env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    """The environment of a `cli` process: a fresh Dagster instance under `tmp_path` and the
    local configuration from `config_dir`."""
    (tmp_path / "home").mkdir()
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"),
            "TRENDING_CONFIG_DIR": str(config_dir), "APP_ENV": "local"}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trending_assets.cli", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def test_run_seeds_once_processes_new_files_and_summarizes(tmp_path, tiny_bert_dir, netflix):
    root = tmp_path / "root"
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir,
                                    {"storage": {"seed_sample": True}})
    env = cli_env(tmp_path, config_dir)

    first = run_cli(env, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "placed the bundled sample" in first.stdout
    assert "landing files ingested: ['netflix_titles_genres.csv.gz']" in first.stdout
    lines = first.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    rows = {line.split()[0]: line for line in lines[header + 2:header + 5]}
    assert set(rows) == {"reference", "xgboost", "bert"}
    assert "v1 (staging)" in rows["xgboost"] and "v1 (staging)" in rows["bert"]
    assert all("passed" in row for row in rows.values())
    # Staging only: the shipped gates leave production to a person, and the summary says so.
    production = {line.split()[0]: line for line in lines if line.startswith("trending-now-")}
    assert set(production) == {"trending-now-xgboost", "trending-now-bert"}
    assert all(row.endswith("no version holds production yet") for row in production.values())
    macro = float(rows["reference"].split()[1])
    assert 0.2 < macro <= 1.0  # the real reference model on the real sample
    # The runs' console log says what each long step does, at INFO; no DEBUG events.
    assert " - DEBUG - " not in first.stderr
    assert "raw_titles: reading and checking netflix_titles_genres.csv.gz (" in first.stderr
    assert "training_data: merging 1 accepted batch(es), 8,775 rows" in first.stderr
    assert "bert_evaluation: scoring the splits {'train': " in first.stderr

    (root / "landing" / ".draft.csv").write_text("being edited")
    second = run_cli(env, "run")
    assert second.returncode == 0, second.stderr
    assert "landing files ingested: none new" in second.stdout
    assert "  .draft.csv: not ingested: a hidden name" in second.stdout
    assert "nothing to retrain" in second.stdout
    assert "placed the bundled sample" not in second.stdout

    extra = netflix.head(50).assign(id=lambda d: "extra:" + d["id"])
    extra.to_csv(root / "landing" / "extra.csv", index=False)
    third = run_cli(env, "run", "--verbose")
    assert third.returncode == 0, third.stderr
    assert " - DEBUG - " in third.stderr  # every engine event, on request
    assert "landing files ingested: ['extra.csv']" in third.stdout
    assert "v2 (staging)" in third.stdout
    assert sorted(p.name for p in (root / "landing").iterdir()) == [
        ".draft.csv", "extra.csv", "netflix_titles_genres.csv.gz"]

    # A version that does not exist: what is registered, no traceback.
    missing = run_cli(env, "reproduce", "--model", "trending-now-xgboost", "--version", "7")
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"cannot reproduce: trending-now-xgboost has no version 7 in the registry at "
        f"{root / 'artifacts' / 'registry'}; registered: trending-now-bert v1, v2; "
        "trending-now-xgboost v1, v2")
    assert "Traceback" not in missing.stderr


def summary_rows(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    return {line.split()[0]: line for line in lines[header + 2:header + 5]}


def test_refused_model_is_a_result_and_nothing_retrains_after_it(tmp_path, tiny_bert_dir,
                                                                 pipeline_env):
    """A gate above what XGBoost can reach: the run succeeds, the summary says why the model
    was refused, the refusal is recorded, and the next run retrains nothing."""
    root = pipeline_env["root"]
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir,
                                    {"gates": {"xgboost": {"min_macro_f1": 0.99}}})
    env = cli_env(tmp_path, config_dir)

    first = run_cli(env, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no completed training run recorded what it trained on: training" in first.stdout
    run_id = re.search(r"training run (\S+): succeeded", first.stdout).group(1)
    rows = summary_rows(first.stdout)
    macro = float(rows["xgboost"].split()[1])
    assert f"refused: macro_f1 {macro:.3f} < 0.990" in rows["xgboost"]
    assert rows["xgboost"].endswith("not registered (refused)")
    assert "passed" in rows["bert"] and "v1 (staging)" in rows["bert"]

    registry = root / "artifacts" / "registry"
    assert not (registry / "trending-now-xgboost" / "versions").exists()
    record = json.loads((registry / "trending-now-xgboost" / "refused" / f"{run_id}.json")
                        .read_text())
    assert record["registered"] is False
    assert record["blessing"]["decision"] == "refused"
    assert record["blessing"]["policy"] == "first_run"  # no champion to compare with yet
    failed = [c for c in record["blessing"]["criteria"] if c["outcome"] == "fail"]
    assert [c["name"] for c in failed] == ["macro_f1"]
    assert failed[0]["observed"] == pytest.approx(macro, abs=5e-4)

    second = run_cli(env, "run")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (f"nothing changed since the last completed training run {run_id}"
            in second.stdout)
    assert "training run" not in second.stdout.replace(
        f"completed training run {run_id}", "")
    assert summary_rows(second.stdout)["xgboost"] == rows["xgboost"]

    # The summary command tells the same story, and exits 0.
    summary = run_cli(env, "summary")
    assert summary.returncode == 0
    assert summary_rows(summary.stdout)["xgboost"] == rows["xgboost"]


def test_configuration_errors_are_reported_without_a_traceback(tmp_path, tiny_bert_dir):
    config_dir = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir,
                                    {"bert": {"epochs": 0}})
    env = cli_env(tmp_path, config_dir)
    bad_value = run_cli(env, "run")
    assert bad_value.returncode == 2
    assert bad_value.stderr == (
        f"configuration error: invalid configuration:\n  {config_dir / 'local.yaml'}: key "
        "'bert.epochs': Input should be greater than or equal to 1\n")
    unknown_env = run_cli({**env, "APP_ENV": "prod"}, "run")
    assert unknown_env.returncode == 2
    assert unknown_env.stderr == ("configuration error: APP_ENV='prod' is not an environment; "
                                  "use one of local, staging, production\n")


def test_trainers_run_without_dagster(tmp_path, tiny_bert_dir, netflix):
    data = tmp_path / "titles.csv"
    netflix.sample(900, random_state=1).to_csv(data, index=False)
    for module, flags in (
        ("trending_assets.ml.train_xgboost", ["--n-estimators", "10", "--k-best-features", "300"]),
        ("trending_assets.ml.bert.train", ["--model-path", str(tiny_bert_dir), "--epochs", "1"]),
    ):
        out = tmp_path / module.rsplit(".", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", module, "--data", str(data), "--output-dir", str(out),
             "--wandb-mode", "offline", *flags],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**os.environ, "WANDB_SILENT": "true"})
        assert done.returncode == 0, done.stderr
        assert (out / "evaluation" / "metrics.json").exists()
        assert any((out / "model").iterdir())
        assert list((out / "wandb").glob("offline-run-*"))
        assert '"macro_f1"' in done.stdout.splitlines()[-1]


def test_trainer_help_lists_hyperparameters():
    for module, flag in (("trending_assets.ml.train_xgboost", "--max-depth"),
                         ("trending_assets.ml.bert.train", "--max-length")):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0
        for expected in (flag, "--data", "--output-dir", "--wandb-project", "--wandb-run-name"):
            assert expected in done.stdout, (module, expected)


def test_definitions_validate(tmp_path):
    # An instance of its own: the user's $DAGSTER_HOME may not exist yet (fresh clone).
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
         "-m", "trending_assets.definitions"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_bundled_sample_is_package_data():
    from importlib import resources

    data = resources.files("trending_assets.data").joinpath("netflix_titles_genres.csv.gz")
    frame = pd.read_csv(data.open("rb"), compression="gzip", keep_default_na=False)
    assert len(frame) == 8775


def test_flipped_byte_in_production_is_reported_and_replaced_by_the_next_run(
        tmp_path, tiny_bert_dir, netflix):
    root = tmp_path / "root"
    (root / "landing").mkdir(parents=True)
    netflix.sample(800, random_state=0).to_csv(root / "landing" / "batch-001.csv", index=False)
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir, {
        "gates": {f: {"first_run_promote_to": "production"} for f in ("xgboost", "bert")}})
    env = cli_env(tmp_path, config_dir)
    first = run_cli(env, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert run_cli(env, "registry", "verify").returncode == 0

    model = "trending-now-xgboost"
    registry = ModelRegistry(LocalArtifactStore(root / "artifacts"))
    assert registry.aliases(model)["production"] == 1
    digest = registry.get(model, 1)["files"][BOOSTER_FILE]["sha256"]
    blob = root / "artifacts" / registry.blob_key(model, digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    damaged = run_cli(env, "registry", "verify")
    assert damaged.returncode == 1
    assert f"PROBLEM {model} v1: {BOOSTER_FILE} fails its sha256 check" in damaged.stdout
    assert "alias 'production' points at v1, whose files fail verification" in damaged.stdout

    again = run_cli(env, "run", "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    registry = ModelRegistry(LocalArtifactStore(root / "artifacts"))
    assert registry.versions(model) == [1, 2]
    assert registry.get(model, 2)["replaced_blobs"] == [BOOSTER_FILE]  # identical retrain
    assert blob.read_bytes() != bytes(data)
    champion = registry.champion(model)
    assert registry.load(model, champion, XGBoostGenreModel).genres  # production loads
    clean = run_cli(env, "registry", "verify")
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout.rstrip().endswith("no problems")


def test_retraining_follows_what_changed_not_how_the_last_run_ended():
    from dagster import asset, instance_for_test, materialize

    from trending_assets.retraining import Fingerprint, decide_retrain

    @asset
    def trained():
        return 1

    @asset
    def crashed():
        raise RuntimeError("out of memory")

    job = "__ephemeral_asset_job__"  # what materialize() names its runs
    trained_on = Fingerprint("data-1", {"xgboost_model": "1", "bert_model": "2"}, "cfg-1")
    with instance_for_test() as instance:
        first = decide_retrain(instance, job, trained_on, force=False)
        assert first.retrain
        assert first.reason == "no completed training run recorded what it trained on: training"

        done = materialize([trained], instance=instance, tags=trained_on.tags())
        same = decide_retrain(instance, job, trained_on, force=False)
        assert not same.retrain
        assert same.reason.startswith(
            f"nothing changed since the last completed training run {done.run_id} (accepted "
            "data data-1, code versions, configuration cfg-1): nothing to retrain")
        assert decide_retrain(instance, job, trained_on, force=True).retrain

        changed = Fingerprint("data-2", {"xgboost_model": "2", "bert_model": "2",
                                         "new_asset": "1"}, "cfg-2")
        moved = decide_retrain(instance, job, changed, force=False)
        assert moved.retrain
        assert moved.reason == (
            f"changed since the last completed training run {done.run_id}: accepted data "
            "data-1 -> data-2; code version new_asset new -> 1, xgboost_model 1 -> 2; "
            "configuration cfg-1 -> cfg-2")

        # A run launched elsewhere records no fingerprint: the CLI's last one still counts.
        materialize([trained], instance=instance)
        assert not decide_retrain(instance, job, trained_on, force=False).retrain

        failed = materialize([crashed], instance=instance, tags=trained_on.tags(),
                             raise_on_error=False)
        assert not failed.success
        again = decide_retrain(instance, job, trained_on, force=False)
        assert again.retrain
        assert again.reason == (f"the last training run {failed.run_id} ended FAILURE (it "
                                "did not complete; a refused model completes): training again")
