"""Train the TF-IDF + XGBoost model without Dagster.

    python -m trending_assets.ml.train_xgboost --output-dir out/xgboost [--n-estimators 200]
"""

from __future__ import annotations

from trending_assets.ml.cli import (
    build_parser,
    evaluate_and_save,
    load_splits,
    params_from_args,
    tracked,
)
from trending_assets.ml.tfidf import TfidfEncoder, TfidfParams
from trending_assets.ml.xgboost_model import XGBoostGenreModel, XGBoostParams


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__, (XGBoostParams, "xgboost"), (TfidfParams, "tfidf"))
    args = parser.parse_args(argv)
    params = params_from_args(XGBoostParams, "xgboost", args)
    splits = load_splits(args)
    encoder = TfidfEncoder.fit(splits.texts("train"),
                               params_from_args(TfidfParams, "tfidf", args))
    with tracked(args, "xgboost", params) as log:
        model = XGBoostGenreModel.fit(
            encoder, splits.genres,
            encoder.transform(splits.texts("train")), splits.labels("train"),
            encoder.transform(splits.texts("val")), splits.labels("val"), params, log_fn=log)
        result = evaluate_and_save(model, "xgboost", splits, args.output_dir)
        log({"test/macro_f1": result.macro_f1, "test/micro_f1": result.micro_f1})


if __name__ == "__main__":
    main()
