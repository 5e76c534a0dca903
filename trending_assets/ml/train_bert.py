"""Fine-tune the BERT-family genre model without Dagster.

    python -m trending_assets.ml.train_bert --output-dir out/bert [--epochs 1 --model-path DIR]
"""

from __future__ import annotations

from trending_assets.ml.bert import BertParams, train_bert
from trending_assets.ml.cli import (
    build_parser,
    evaluate_and_save,
    load_splits,
    params_from_args,
    tracked,
)


def main(argv: list[str] | None = None) -> None:
    args = build_parser(__doc__, BertParams).parse_args(argv)
    params = params_from_args(BertParams, args)
    splits = load_splits(args)
    with tracked(args, "bert", params) as log:
        model, _ = train_bert(splits.texts("train"), splits.labels("train"), splits.texts("val"),
                              splits.labels("val"), splits.genres, params, log_fn=log)
        result = evaluate_and_save(model, "bert", splits, args.output_dir)
        log({"test/macro_f1": result.macro_f1, "test/micro_f1": result.micro_f1})


if __name__ == "__main__":
    main()
