"""Fine-tune the BERT-family genre model without Dagster (also the torchrun entry point).

    python -m trending_assets.ml.bert.train --output-dir out/bert [--epochs 1 --model-path DIR]
    torchrun --nproc_per_node=2 -m trending_assets.ml.bert.train --output-dir out/bert ...

With --checkpoint-dir the run writes checkpoints there and, started again with the same
arguments, resumes from the newest complete one. Under torchrun only rank 0 logs, tracks
and writes; --batch-size stays the optimizer-step batch over all processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from trending_assets.ml.bert.checkpoint import DirectoryCheckpointStorage
from trending_assets.ml.bert.loop import start_workers, stop_workers
from trending_assets.ml.bert.model import train_bert
from trending_assets.ml.bert.params import BertParams
from trending_assets.ml.cli import (
    build_parser,
    evaluate_and_save,
    load_splits,
    params_from_args,
    tracked,
)
from trending_assets.ml.dataset import TitleSplits

PROGRESS_PREFIX = "progress: "  # stdout lines a parent process reads (see --progress-lines)
FIT_PREFIX = "fit: "  # the speed figures of the finished training, JSON


def print_progress(metrics: dict[str, float]) -> None:
    print(PROGRESS_PREFIX + json.dumps(metrics), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, (BertParams, "bert"))
    parser.add_argument("--splits-dir", type=Path, default=None,
                        help="a saved TitleSplits folder (splits.parquet + genres.json) to "
                             "train on instead of --data")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="write checkpoints here and resume from the newest complete one")
    parser.add_argument("--tracker-run-id", default=None,
                        help="tracking run id recorded in checkpoints")
    parser.add_argument("--progress-lines", action="store_true",
                        help=f"print progress as '{PROGRESS_PREFIX}<json>' lines on stdout")
    parser.add_argument("--model-only", action="store_true",
                        help="save the model without the test-set evaluation")
    args = parser.parse_args(argv)
    params = params_from_args(BertParams, "bert", args)
    workers = start_workers()
    try:
        splits = TitleSplits.load(args.splits_dir) if args.splits_dir else load_splits(args)
        storage = DirectoryCheckpointStorage(args.checkpoint_dir) if args.checkpoint_dir else None
        tracking = tracked(args, "bert", params) if workers.is_main else nullcontext(None)
        with tracking as tracker_log:
            sinks = [f for f in (tracker_log, args.progress_lines and print_progress) if f]

            def log(metrics: dict[str, float], sinks: list[Callable] = sinks) -> None:
                for sink in sinks:
                    sink(metrics)

            training = train_bert(
                splits.texts("train"), splits.labels("train"), splits.texts("val"),
                splits.labels("val"), splits.genres, params, log_fn=log,
                checkpoints=storage, tracker_run_id=args.tracker_run_id)
            if not workers.is_main:
                return
            print(FIT_PREFIX + json.dumps(training.fit.summary()), flush=True)
            if args.model_only:
                training.model.save(args.output_dir / "model")
                return
            result = evaluate_and_save(training.model, "bert", splits, args.output_dir)
            log({"test/macro_f1": result.macro_f1, "test/micro_f1": result.micro_f1})
    finally:
        stop_workers()


if __name__ == "__main__":
    main()
