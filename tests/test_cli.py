"""`make run`'s command: seeds the landing area once, ingests only new files, prints a summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .conftest import REPO, write_test_configs


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trending_assets.cli", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def test_run_seeds_once_processes_new_files_and_summarizes(tmp_path, tiny_bert_dir, netflix):
    root = tmp_path / "root"
    config_dir = write_test_configs(tmp_path / "configs", root, tiny_bert_dir,
                                    {"storage": {"seed_sample": True}})
    (tmp_path / "home").mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"),
           "TRENDING_CONFIG_DIR": str(config_dir), "APP_ENV": "local"}

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
    macro = float(rows["reference"].split()[1])
    assert 0.2 < macro <= 1.0  # the real reference model on the real sample
    # The runs' console log says what each long step does, at INFO; no DEBUG events.
    assert " - DEBUG - " not in first.stderr
    assert "raw_titles: reading and checking netflix_titles_genres.csv.gz (" in first.stderr
    assert "training_data: merging 1 accepted batch(es), 8,775 rows" in first.stderr
    assert "bert_evaluation: scoring the splits {'train': " in first.stderr

    second = run_cli(env, "run")
    assert second.returncode == 0, second.stderr
    assert "landing files ingested: none new" in second.stdout
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
        "extra.csv", "netflix_titles_genres.csv.gz"]

    # A version that does not exist: what is registered, no traceback.
    missing = run_cli(env, "reproduce", "--model", "trending-now-xgboost", "--version", "7")
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"cannot reproduce: trending-now-xgboost has no version 7 in the registry at "
        f"{root / 'artifacts' / 'registry'}; registered: trending-now-bert v1, v2; "
        "trending-now-xgboost v1, v2")
    assert "Traceback" not in missing.stderr


def test_configuration_errors_are_reported_without_a_traceback(tmp_path, tiny_bert_dir):
    config_dir = write_test_configs(tmp_path / "configs", tmp_path / "root", tiny_bert_dir,
                                    {"bert": {"epochs": 0}})
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "TRENDING_CONFIG_DIR": str(config_dir),
           "APP_ENV": "local"}
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
        ("trending_assets.ml.train_bert", ["--model-path", str(tiny_bert_dir), "--epochs", "1"]),
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
                         ("trending_assets.ml.train_bert", "--max-length")):
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
