"""What the stand-alone trainers share: data loading, hyperparameter flags, tracking, output.

The trainers run without Dagster on a titles file (the landing-file columns) so a person
can reproduce or debug one model from a terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from trending_assets.ml.dataset import TitleSplits, assign_splits, build_training_table
from trending_assets.ml.landing_file import read_titles
from trending_assets.ml.report import EvaluationResult, evaluate_on_splits
from trending_assets.ml.taxonomy import Taxonomy

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PACKAGED_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "netflix_titles_genres.csv.gz"


def build_parser(description: str, params_type: type) -> argparse.ArgumentParser:
    """Common flags plus one flag per field of the hyperparameter dataclass."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=PACKAGED_SAMPLE,
                        help="titles CSV (id,title,kind,description,genres,year,source); "
                             "default: the bundled Netflix sample")
    parser.add_argument("--taxonomy", type=Path, default=REPO_CONFIGS / "genres.yaml",
                        help="genre taxonomy YAML")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for the model and its evaluation")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--split-salt", default="trending-now-split-v1")
    parser.add_argument("--wandb-project", default="trending-now")
    parser.add_argument("--wandb-run-name", default=None)
    parser.add_argument("--wandb-mode", choices=["offline", "online", "disabled"],
                        default="offline")
    group = parser.add_argument_group("hyperparameters")
    for field in dataclasses.fields(params_type):
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):  # type=bool would read "False" as True
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=field.default, help=f"default: {field.default}")
            continue
        kind = type(field.default) if field.default is not None else str
        group.add_argument(flag, type=kind, default=field.default,
                           help=f"default: {field.default}")
    return parser


def params_from_args(params_type: type, args: argparse.Namespace) -> Any:
    return params_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(params_type)})


def load_splits(args: argparse.Namespace) -> TitleSplits:
    taxonomy = Taxonomy.from_config(yaml.safe_load(args.taxonomy.read_text()))
    raw = read_titles(args.data.read_bytes(), str(args.data))
    table, genres, _ = build_training_table([raw], taxonomy)
    return TitleSplits(assign_splits(table, args.val_fraction, args.test_fraction,
                                     args.split_salt), genres)


@contextmanager
def tracked(args: argparse.Namespace, family: str, params: Any) -> Iterator[Callable]:
    """A W&B run (offline by default) for the duration of a training; yields its log()."""
    import wandb

    run = wandb.init(project=args.wandb_project, name=args.wandb_run_name, mode=args.wandb_mode,
                     dir=str(args.output_dir), job_type="train",
                     config={"family": family, "params": dataclasses.asdict(params),
                             "data": str(args.data)},
                     settings=wandb.Settings(silent=True, console="off"))
    try:
        yield run.log
    finally:
        run.finish()


def evaluate_and_save(model: Any, family: str, splits: TitleSplits, output_dir: Path
                      ) -> EvaluationResult:
    """Thresholds on validation, metrics on test; model and report written to output_dir."""
    result = evaluate_on_splits(model, family, splits)
    (output_dir / "model").mkdir(parents=True, exist_ok=True)
    model.save(output_dir / "model")
    result.save(output_dir / "evaluation")
    print(json.dumps({"model": family, "macro_f1": round(result.macro_f1, 4),
                      "micro_f1": round(result.micro_f1, 4), "output_dir": str(output_dir)}))
    return result
