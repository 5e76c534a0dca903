"""Benchmark: the reference model, a naive XGBoost and ours, on one split, at 1x/10x/100x rows.

    python -m trending_assets.bench.xgboost [--scales 1 10 100] [--all-models]

Data: the bundled Netflix titles mapped with the shipped taxonomy (configs/genres.yaml),
hash split by id with the configured fractions and salt; TF-IDF, reference and XGBoost
parameters from the configuration (configs/base.yaml + the APP_ENV overlay), i.e. what the
pipeline trains by default.

Models (each fitted in its own worker process, one at a time):

- reference: LinearGenreModel (TF-IDF + one-vs-rest logistic regression, liblinear, balanced).
- naive: XGBoost as usually written (the anchors note): hist, depth 6, up to 300 rounds,
  library defaults otherwise (eta 0.3, max_bin 256), one booster with 2-D labels on the full
  sparse TF-IDF, early stopping on validation (same patience as ours).
- ours: XGBoostGenreModel with the configured parameters.

Every model gets per-genre thresholds chosen on validation and is scored on test
(report.evaluate). Fit time = fitting on the already-encoded TF-IDF matrices (the pipeline's
tfidf_features asset encodes once for every model): wall seconds and CPU seconds (all threads
of the worker), the median of 3 fits for ours at 1x (its per-stage times too), else of one
fit. CPU seconds move less than wall seconds when other work shares the machine. Predict time =
predict_proba on the test texts, TF-IDF encoding included. Peak memory = the worker's
resident-set high-water mark during the fit, minus its resident set just before (the data
is already in memory).

Scales: 1x is the real train split. For Nx, (N-1) x (train rows) synthetic rows are added,
each derived from two random real train titles: the first half of one synopsis joined to the
second half of the other, labelled with the union of their genres (seeded). Unlike word
dropout, this does not fill the train split with near-copies (which make out-of-fold scores
leak and stop boosting after a round). Validation and test stay the real ones and the TF-IDF
vocabulary is the one fitted on the real train split, so only the number of rows grows;
F1 at 10x/100x is printed but is not a quality measure (the label mix differs). The naive
model runs at 1x only and the reference at 1x and 10x (their 100x fits would take longer
than the whole benchmark budget); `--all-models` runs everything everywhere. The last line
of output is JSON.

OpenMP: the benchmark sets OMP_WAIT_POLICY=PASSIVE (unless already set) before any OpenMP
runtime loads, for every model alike. On a shared machine, spinning OpenMP workers that lose
their core make XGBoost fits 10-70x slower and the timings meaningless.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import xgboost as xgb

from trending_assets.ml.dataset import TitleSplits, assign_splits, build_training_table
from trending_assets.ml.landing_file import read_titles
from trending_assets.ml.linear import LinearGenreModel, LinearParams
from trending_assets.ml.report import evaluate
from trending_assets.ml.taxonomy import Taxonomy
from trending_assets.ml.tfidf import TfidfEncoder
from trending_assets.ml.xgboost_model import (
    XGBoostGenreModel,
    XGBoostParams,
    cuda_build,
    usable_cores,
)
from trending_assets.settings import Settings, load_settings, load_taxonomy_config

PACKAGED_DATA = Path(__file__).resolve().parents[1] / "data" / "netflix_titles_genres.csv.gz"
DEFAULT_SCALES = (1, 10, 100)
MODELS = ("reference", "naive", "ours")
# Which models run at which scale by default (see the module docstring).
DEFAULT_PLAN = {"reference": {1, 10}, "naive": {1}, "ours": {1, 10, 100}}
NAIVE_ROUNDS = 300
NAIVE_DEPTH = 6
WORKER_TIMEOUT_S = 1500
FAST_MODELS = {"ours"}  # repeated at 1x (median of REPEAT fits)
REPEAT = 3


@dataclass
class BenchData:
    genres: list[str]
    encoder: TfidfEncoder
    val_texts: list[str]
    test_texts: list[str]
    x_val: sp.csr_matrix
    y_val: np.ndarray
    y_test: np.ndarray
    # per scale: encoded train rows and labels
    train: dict[int, tuple[sp.csr_matrix, np.ndarray]]

    def save(self, directory: Path) -> None:
        """Plain files (JSON, npz, npy) a worker process reads back; no pickle."""
        self.encoder.save(directory)
        (directory / "bench.json").write_text(json.dumps({
            "genres": self.genres, "val_texts": self.val_texts, "test_texts": self.test_texts,
            "scales": sorted(self.train)}))
        sp.save_npz(directory / "x_val.npz", self.x_val, compressed=False)
        np.save(directory / "y_val.npy", self.y_val)
        np.save(directory / "y_test.npy", self.y_test)
        for scale, (x, y) in self.train.items():
            sp.save_npz(directory / f"x_train_{scale}.npz", x, compressed=False)
            np.save(directory / f"y_train_{scale}.npy", y)

    @classmethod
    def load(cls, directory: Path, scales: Sequence[int]) -> BenchData:
        meta = json.loads((directory / "bench.json").read_text())
        return cls(
            genres=meta["genres"], encoder=TfidfEncoder.load(directory),
            val_texts=meta["val_texts"], test_texts=meta["test_texts"],
            x_val=sp.load_npz(directory / "x_val.npz").tocsr(),
            y_val=np.load(directory / "y_val.npy", allow_pickle=False),
            y_test=np.load(directory / "y_test.npy", allow_pickle=False),
            train={s: (sp.load_npz(directory / f"x_train_{s}.npz").tocsr(),
                       np.load(directory / f"y_train_{s}.npy", allow_pickle=False))
                   for s in scales},
        )


# --- data -------------------------------------------------------------------------------


def load_splits(settings: Settings, data: Path) -> TitleSplits:
    taxonomy = Taxonomy.from_config(load_taxonomy_config(settings))
    table, genres, _ = build_training_table([read_titles(data.read_bytes(), str(data))], taxonomy)
    split = settings.data.split
    return TitleSplits(assign_splits(table, split.val_fraction, split.test_fraction, split.salt),
                       genres)


def derived_rows(
    texts: Sequence[str], y: np.ndarray, copies: int, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """copies x len(texts) rows: first half of text i + second half of a random text j,
    labelled with the union of their genres."""
    rng = np.random.default_rng(seed)
    words = [t.split() for t in texts]
    out: list[str] = []
    labels = []
    for _ in range(copies):
        partners = rng.integers(0, len(texts), len(texts))
        for i, j in enumerate(partners):
            head, tail = words[i], words[j]
            out.append(" ".join(head[:(len(head) + 1) // 2] + tail[len(tail) // 2:]))
        labels.append(np.maximum(y, y[partners]))
    return out, np.concatenate(labels) if labels else y[:0]


def scaled_train(
    encoder: TfidfEncoder, x_train: sp.csr_matrix, texts: Sequence[str], y: np.ndarray,
    scale: int,
) -> tuple[sp.csr_matrix, np.ndarray]:
    if scale == 1:
        return x_train, y
    extra_texts, extra_y = derived_rows(texts, y, scale - 1, seed=scale)
    return (sp.vstack([x_train, encoder.transform(extra_texts)], format="csr"),
            np.concatenate([y, extra_y]))


# --- measuring --------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


@dataclass
class Measured:
    result: Any
    seconds: float
    cpu_seconds: float
    peak_mb: float


def measure(run: Callable[[], Any]) -> Measured:
    """run() with wall and CPU seconds and peak extra resident MB (peak via /proc, Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        before = _status_mb("VmRSS")
    except (OSError, KeyError):
        before = float("nan")
    start, cpu = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    try:
        peak = _status_mb("VmHWM") - before
    except (OSError, KeyError):
        peak = float("nan")
    return Measured(result, seconds, cpu_seconds, peak)


class NaiveXGBoost:
    """The straightforward XGBoost: full sparse TF-IDF, library defaults, 2-D labels."""

    def __init__(self, encoder: TfidfEncoder, booster: xgb.Booster, genres: list[str]) -> None:
        self.encoder, self.booster, self.genres = encoder, booster, genres

    @classmethod
    def fit(cls, encoder: TfidfEncoder, genres: list[str], x: sp.csr_matrix, y: np.ndarray,
            x_val: sp.csr_matrix, y_val: np.ndarray, patience: int, threads: int,
            device: str = "cpu") -> NaiveXGBoost:
        params = {"objective": "binary:logistic", "eval_metric": "logloss",
                  "tree_method": "hist", "max_depth": NAIVE_DEPTH, "nthread": threads,
                  "device": device, "seed": 0}
        dtrain = xgb.DMatrix(x, label=y)
        dval = xgb.DMatrix(x_val, label=y_val)
        booster = xgb.train(params, dtrain, NAIVE_ROUNDS, evals=[(dval, "val")],
                            early_stopping_rounds=patience, verbose_eval=False)
        return cls(encoder, booster, genres)

    @property
    def best_iteration(self) -> int:
        return int(self.booster.best_iteration)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        matrix = xgb.DMatrix(self.encoder.transform(list(texts)))
        probs = self.booster.predict(matrix, iteration_range=(0, self.best_iteration + 1))
        return np.asarray(probs, dtype=np.float32).reshape(len(texts), len(self.genres))


def fit_model(data: BenchData, name: str, scale: int, config: dict[str, Any]) -> Any:
    x, y = data.train[scale]
    if name == "reference":
        return LinearGenreModel.fit(data.encoder, data.genres, x, y,
                                    LinearParams.model_validate(config["reference"]))
    ours = XGBoostParams.model_validate(config["xgboost"])
    if name == "naive":
        return NaiveXGBoost.fit(data.encoder, data.genres, x, y, data.x_val, data.y_val,
                                ours.early_stopping_rounds, config["threads"])
    if name in ("ours", "ours_gpu"):
        return XGBoostGenreModel.fit(data.encoder, data.genres, x, y, data.x_val, data.y_val,
                                     ours)
    raise ValueError(name)


def worker(data: BenchData, name: str, scale: int, config: dict[str, Any],
           repeat: int = 1) -> dict[str, Any]:
    """Fit `repeat` times (median times, largest peak), then predict and score the last fit."""
    fits = [measure(lambda: fit_model(data, name, scale, config)) for _ in range(repeat)]
    model = fits[-1].result
    predicted = measure(lambda: model.predict_proba(data.test_texts))
    p_val = model.predict_proba(data.val_texts)
    result = evaluate(name, data.genres, data.y_val, p_val, data.y_test, predicted.result, {})
    row = {"fit_s": statistics.median(f.seconds for f in fits),
           "fit_cpu_s": statistics.median(f.cpu_seconds for f in fits),
           "fits": repeat, "predict_s": predicted.seconds,
           "peak_fit_mb": max(f.peak_mb for f in fits),
           "macro_f1": result.macro_f1, "micro_f1": result.micro_f1}
    if hasattr(model, "best_iteration"):
        row["rounds"] = model.best_iteration + 1
        row["rounds_run"] = model.booster.num_boosted_rounds()
    if isinstance(model, XGBoostGenreModel):
        row["stages_s"] = {stage: statistics.median(f.result.timings[stage] for f in fits)
                           for stage in model.timings}
    return row


def worker_main(args: argparse.Namespace) -> None:
    """`--worker NAME`: one model in this process; prints one JSON line."""
    try:
        data = BenchData.load(args.data_dir, [args.scale])
        payload = {"ok": True, **worker(data, args.worker, args.scale, json.loads(args.config),
                                        args.repeat)}
    except Exception as exc:  # reported in the table, the benchmark goes on
        payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(payload))


def run_isolated(name: str, scale: int, config: dict[str, Any], data_dir: Path,
                 repeat: int = 1) -> dict[str, Any]:
    """worker() in a fresh Python process: a clean memory high-water mark per model, and no
    OpenMP state shared with the parent."""
    command = [sys.executable, "-m", "trending_assets.bench.xgboost", "--worker", name,
               "--scale", str(scale), "--data-dir", str(data_dir), "--config",
               json.dumps(config), "--repeat", str(repeat)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no result within {WORKER_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return {"ok": False, "error": f"worker failed: {tail[0]}"}
    return json.loads(lines[-1])


# --- GPU --------------------------------------------------------------------------------


def gpu_status() -> tuple[bool, str]:
    if not cuda_build():
        return False, ("this XGBoost build (xgboost-cpu wheel) has no CUDA support, and this "
                       "machine has no GPU")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no nvidia-smi on PATH: no GPU visible"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False, "nvidia-smi lists no GPU"
    return True, listed.stdout.strip().splitlines()[0]


# --- report -----------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'scale':>5} {'train rows':>10} {'model':<9} {'fit s':>7} {'fit cpu s':>9} "
              f"{'predict s':>9} {'peak MB':>7} {'macro-F1':>8} {'micro-F1':>8} {'rounds':>7}"
              "  note")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['scale']:>4}x {r['rows']:>10,} {r['model']:<9} "
              f"{_fmt(r.get('fit_s'), '.2f'):>7} {_fmt(r.get('fit_cpu_s'), '.2f'):>9} "
              f"{_fmt(r.get('predict_s'), '.3f'):>9} {_fmt(r.get('peak_fit_mb'), '.0f'):>7} "
              f"{_fmt(r.get('macro_f1'), '.4f'):>8} {_fmt(r.get('micro_f1'), '.4f'):>8} "
              f"{_rounds(r):>7}  {r.get('note', '')}")


def _rounds(row: dict[str, Any]) -> str:
    """best/run boosting rounds."""
    if not row.get("rounds"):
        return "-"
    return f"{row['rounds']}/{row['rounds_run']}"


def growth(scaling: dict[str, dict[str, Any]], model: str) -> dict[str, Any] | None:
    """How fit time and peak memory grew from the smallest to the largest scale run."""
    scales = sorted(int(s) for s, m in scaling.items() if m.get(model, {}).get("fit_s"))
    if len(scales) < 2:
        return None
    low, high = scaling[str(scales[0])][model], scaling[str(scales[-1])][model]
    per_round = None
    if high.get("rounds_run") and low.get("rounds_run") and "stages_s" in high:
        per_round = ((high["stages_s"]["boost_s"] / high["rounds_run"])
                     / (low["stages_s"]["boost_s"] / low["rounds_run"]))
    return {"from_scale": scales[0], "to_scale": scales[-1],
            "rows_x": high["rows"] / low["rows"], "fit_x": high["fit_s"] / low["fit_s"],
            "fit_cpu_x": (high["fit_cpu_s"] / low["fit_cpu_s"]
                          if high.get("fit_cpu_s") and low.get("fit_cpu_s") else None),
            "fit_per_round_x": per_round, "peak_mb_x": high["peak_fit_mb"] / low["peak_fit_mb"]}


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def prepare(settings: Settings, data: Path, scales: Sequence[int]) -> tuple[BenchData, dict]:
    splits = load_splits(settings, data)
    encoder = TfidfEncoder.fit(splits.texts("train"), settings.tfidf)
    x_train = encoder.transform(splits.texts("train"))
    y_train = splits.labels("train")
    bench = BenchData(
        genres=splits.genres, encoder=encoder, val_texts=splits.texts("val"),
        test_texts=splits.texts("test"), x_val=encoder.transform(splits.texts("val")),
        y_val=splits.labels("val"), y_test=splits.labels("test"),
        train={scale: scaled_train(encoder, x_train, splits.texts("train"), y_train, scale)
               for scale in sorted(scales)},
    )
    return bench, splits.counts()


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=list(DEFAULT_SCALES))
    parser.add_argument("--data", type=Path, default=PACKAGED_DATA)
    parser.add_argument("--all-models", action="store_true",
                        help="run every model at every scale (the 100x naive fit takes hours)")
    # internal: one model in a worker process
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return None
    if 1 not in args.scales:
        parser.error("--scales must include 1 (the real data size)")

    settings = load_settings()
    threads = usable_cores()
    ours = settings.xgboost
    config = {"reference": settings.reference.model_dump(), "xgboost": ours.model_dump(),
              "threads": threads}
    print(f"# XGBoost benchmark: {platform.node()}, python {platform.python_version()}, "
          f"xgboost {xgb.__version__}, {threads} threads (affinity + cgroup quota), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load_average()}")
    print(f"# ours: {json.dumps(ours.model_dump())}")
    started = time.perf_counter()
    bench, counts = prepare(settings, args.data, args.scales)
    print(f"# data: {args.data.name}, {len(bench.genres)} genres, train/val/test rows "
          f"{counts['train']}/{counts['val']}/{counts['test']}, "
          f"{bench.encoder.n_features} TF-IDF features; {sorted(args.scales)}x prepared in "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    rows: list[dict[str, Any]] = []
    scaling: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-xgboost-") as tmp:
        data_dir = Path(tmp)
        bench.save(data_dir)
        for scale in sorted(args.scales):
            n = bench.train[scale][0].shape[0]
            scaling[str(scale)] = {"rows": n}
            for name in MODELS:
                row: dict[str, Any] = {"scale": scale, "rows": n, "model": name}
                if not args.all_models and scale not in DEFAULT_PLAN[name]:
                    row["note"] = "not run at this scale (time budget; --all-models runs it)"
                    rows.append(row)
                    continue
                repeat = REPEAT if scale == 1 and name in FAST_MODELS else 1
                result = run_isolated(name, scale, config, data_dir, repeat)
                if result.pop("ok"):
                    row.update(result)
                    scaling[str(scale)][name] = {"rows": n, **result}
                    row["note"] = f"median of {repeat} fits" if repeat > 1 else ""
                    if "stages_s" in result:
                        st = result["stages_s"]
                        row["note"] += (f"{'; ' if row['note'] else ''}stages: linear+NB "
                                        f"{st['linear_s']:.1f}s, select {st['select_s']:.1f}s, "
                                        f"boost {st['boost_s']:.1f}s, thresholds "
                                        f"{st['thresholds_s']:.1f}s")
                else:
                    row["note"] = result["error"]
                rows.append(row)
                print(f"#   {scale}x {name}: " + ", ".join(
                    f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)), flush=True)

        gpu_ok, gpu_reason = gpu_status()
        gpu_row: dict[str, Any] = {"scale": 1, "rows": bench.train[1][0].shape[0],
                                   "model": "ours_gpu"}
        if gpu_ok:
            gpu_config = {**config, "xgboost": {**config["xgboost"], "device": "cuda"}}
            result = run_isolated("ours", 1, gpu_config, data_dir, REPEAT)
            if result.pop("ok"):
                gpu_row.update(result, note=f"device=cuda on {gpu_reason}")
                scaling["1"]["ours_gpu"] = result
            else:
                gpu_row["note"] = result["error"]
        else:
            gpu_row["note"] = f"not run: {gpu_reason}"
        rows.append(gpu_row)

    print()
    print_table(rows)
    print("(rounds: best round used for prediction / rounds run before early stopping; fit s "
          "and predict s are wall seconds)")
    real = scaling["1"]
    summary: dict[str, Any] = {}
    for name in MODELS:
        for key in ("macro_f1", "micro_f1", "fit_s", "fit_cpu_s"):
            summary[f"{name}_{key}"] = real.get(name, {}).get(key)
    if summary["naive_fit_s"] and summary["ours_fit_s"]:
        summary["ours_fit_speedup_vs_naive"] = summary["naive_fit_s"] / summary["ours_fit_s"]
        summary["ours_fit_cpu_speedup_vs_naive"] = (summary["naive_fit_cpu_s"]
                                                    / summary["ours_fit_cpu_s"])
    summary["growth"] = {m: g for m in MODELS if (g := growth(scaling, m))}
    print()
    for model, g in summary["growth"].items():
        print(f"# {model}: rows x{g['rows_x']:.0f} ({g['from_scale']}x -> {g['to_scale']}x): "
              f"fit time x{g['fit_x']:.1f} (CPU x{g['fit_cpu_x']:.1f}"
              + (f", boosting time per round x{g['fit_per_round_x']:.1f}"
                 if g["fit_per_round_x"] else "")
              + f"), peak fit memory x{g['peak_mb_x']:.1f}")
    print(f"# load average at the end: {load_average()}; total "
          f"{time.perf_counter() - started:.0f} s")
    summary.update(scaling=scaling, gpu={"ran": gpu_ok, "reason": gpu_reason},
                   threads=threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                   params=ours.model_dump())
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
