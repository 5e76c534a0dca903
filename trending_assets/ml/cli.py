"""What the stand-alone trainers share: data loading, hyperparameter flags, tracking, output.

The trainers run without Dagster on a titles file (the landing-file columns) so a person
can reproduce or debug one model from a terminal. They read the same configs/ files as
the pipeline (base.yaml + the --env overlay); a flag overrides one key for one run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from trending_assets.ml.config import (
    ENVIRONMENTS,
    REPO_CONFIGS,
    Model,
    merged_config,
    section_params,
)
from trending_assets.ml.dataset import TitleSplits, assign_splits, build_training_table
from trending_assets.ml.landing_file import read_titles
from trending_assets.ml.limits import LandingLimits
from trending_assets.ml.report import EvaluationResult, evaluate_on_splits
from trending_assets.ml.taxonomy import Taxonomy

PACKAGED_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "netflix_titles_genres.csv.gz"
FROM_CONFIG = "default: configs/"


def build_parser(description: str, *sections: tuple[type[BaseModel], str]
                 ) -> argparse.ArgumentParser:
    """Common flags plus one flag per field of each (parameter schema, config section).

    A flag left out takes its value from the configuration files (--config-dir, --env),
    as the pipeline does: the YAML holds the one value of every key."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-dir", type=Path, default=REPO_CONFIGS,
                        help="folder of base.yaml and the environment overlays")
    parser.add_argument("--env", choices=ENVIRONMENTS, default="local",
                        help="which overlay applies over base.yaml")
    parser.add_argument("--data", type=Path, default=PACKAGED_SAMPLE,
                        help="titles CSV (id,title,kind,description,genres,year,source); "
                             "default: the bundled Netflix sample")
    parser.add_argument("--taxonomy", type=Path, default=None,
                        help=f"genre taxonomy YAML; {FROM_CONFIG} data.taxonomy_file")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for the model and its evaluation")
    for name in ("val_fraction", "test_fraction"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                            help=f"{FROM_CONFIG} data.split.{name}")
    parser.add_argument("--split-salt", default=None, help=f"{FROM_CONFIG} data.split.salt")
    parser.add_argument("--wandb-project", default=None, help=f"{FROM_CONFIG} tracking.project")
    parser.add_argument("--wandb-run-name", default=None)
    parser.add_argument("--wandb-mode", choices=["offline", "online", "disabled"],
                        default="offline")
    for params_type, section in sections:
        group = parser.add_argument_group(f"hyperparameters (configs: `{section}:`)")
        for name, field in params_type.model_fields.items():
            flag = f"--{name.replace('_', '-')}"
            helptext = f"{FROM_CONFIG} {section}.{name}"
            if field.annotation is bool:  # type=bool would read "False" as True
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                   help=helptext)
            else:  # the schema converts and checks the text
                group.add_argument(flag, default=None, help=helptext)
    return parser


def params_from_args(params_type: type[Model], section: str, args: argparse.Namespace) -> Model:
    """The configured `section` with the flags given on the command line on top."""
    given = {name: getattr(args, name) for name in params_type.model_fields
             if getattr(args, name) is not None}
    return section_params(params_type, section, args.env, args.config_dir, **given)


def load_splits(args: argparse.Namespace) -> TitleSplits:
    config = merged_config(args.env, args.config_dir)
    data = config["data"]
    taxonomy_file = args.taxonomy or args.config_dir / data["taxonomy_file"]
    taxonomy = Taxonomy.from_config(yaml.safe_load(taxonomy_file.read_text()))
    limits = LandingLimits.model_validate(data["landing_limits"])
    raw = read_titles(args.data.read_bytes(), str(args.data), limits)
    table, genres, _ = build_training_table([raw], taxonomy)
    split = data["split"]
    return TitleSplits(assign_splits(
        table, _given(args.val_fraction, split["val_fraction"]),
        _given(args.test_fraction, split["test_fraction"]),
        _given(args.split_salt, split["salt"])), genres)


def _given(flag: Any, configured: Any) -> Any:
    return configured if flag is None else flag


@contextmanager
def tracked(args: argparse.Namespace, family: str, params: Any) -> Iterator[Callable]:
    """A W&B run (offline by default) for the duration of a training; yields its log()."""
    import wandb

    project = _given(args.wandb_project,
                     merged_config(args.env, args.config_dir)["tracking"]["project"])
    run = wandb.init(project=project, name=args.wandb_run_name, mode=args.wandb_mode,
                     dir=str(args.output_dir), job_type="train",
                     config={"family": family, "params": params.model_dump(),
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
