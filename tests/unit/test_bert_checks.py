"""The GPU acceptance checks (trending_assets.bench.bert_checks) run on CPU: every check
passes with figures within its tolerance, the table and the JSON line agree, and a broken
loop (or a figure beyond tolerance) fails a check and the exit status."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO
from trending_assets.bench import bert_checks as checks
from trending_assets.ml.bert import loop as bert_loop

pytestmark = pytest.mark.e2e  # the acceptance checks train BERT: too slow for make test-fast

CPU = torch.device("cpu")


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the printed table's body rows."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0] == "| check | device | passed | figure | detail |"
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def report(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cpu_run() -> subprocess.CompletedProcess:
    # The operator's command, forced onto the CPU whatever this machine has.
    return subprocess.run([sys.executable, "-m", "trending_assets.bench.bert_checks"],
                          cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=600)


def test_every_check_passes_on_cpu(cpu_run: subprocess.CompletedProcess) -> None:
    assert cpu_run.returncode == 0, (cpu_run.stdout + cpu_run.stderr)[-3000:]
    result = report(cpu_run.stdout)
    assert result["device"] == "cpu" and result["torch"] == torch.__version__
    assert result["passed"] is True
    rows = {r["check"]: r for r in result["rows"]}
    assert list(rows) == list(checks.CHECKS)
    assert all(r["passed"] and r["device"] == "cpu" for r in rows.values()), rows

    # precision: fp32 on CPU, seen in the Linear outputs, and the loss fell.
    assert 0 < rows["precision"]["figure"] < 1
    assert rows["precision"]["detail"].startswith("fp32 (autocast(cpu); wanted fp32)")
    assert "Linear output in fit: float32; weights float32" in rows["precision"]["detail"]
    # resume: bit-identical to the uninterrupted run, from a mid-epoch checkpoint.
    assert rows["resume"]["figure"] <= 1e-5
    assert "stopped at step 7, resumed from 5, ended at 16 of 16" in rows["resume"]["detail"]
    # metrics: the CPU behaviour (no GPU figures), verified rather than skipped.
    assert rows["metrics"]["figure"] is None
    assert rows["metrics"]["detail"] == "not applicable on cpu"
    # data_parallel: two gloo processes within 1e-4 of one process.
    assert rows["data_parallel"]["figure"] <= 1e-4
    assert "2 processes over gloo, probe all-reduce sum 2, 24 steps" in \
        rows["data_parallel"]["detail"]


def test_table_matches_json(cpu_run: subprocess.CompletedProcess) -> None:
    cells = table_rows(cpu_run.stdout)
    rows = report(cpu_run.stdout)["rows"]
    assert len(cells) == len(rows) == len(checks.CHECKS)
    for (check, device, passed, figure, detail), row in zip(cells, rows, strict=True):
        assert (check, device, detail) == (row["check"], row["device"], row["detail"])
        assert passed == ("PASS" if row["passed"] else "FAIL")
        if row["figure"] is None:
            assert figure == "-"
        else:
            assert float(figure) == pytest.approx(row["figure"], rel=1e-3, abs=1e-12)


def test_resume_without_random_state_restore_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The loop forgetting to restore the random state: other dropout masks after resuming.
    monkeypatch.setattr(bert_loop, "restore_rng", lambda state: None)
    assert checks.main(["--checks", "resume"]) == 1
    out = capsys.readouterr().out
    result = report(out)
    assert result["passed"] is False
    [row] = result["rows"]
    assert row["check"] == "resume" and row["passed"] is False
    assert row["figure"] > 100 * checks.TOLERANCE[("resume", "cpu")]
    assert table_rows(out)[0][2] == "FAIL"


def test_weight_comparison_fails_beyond_tolerance() -> None:
    weights = {"w": torch.zeros(3, 2), "b": torch.ones(2)}
    shifted = {"w": weights["w"].clone(), "b": weights["b"].clone()}
    shifted["w"][1, 1] += 3e-5
    over = checks.compare("resume", CPU, weights, shifted, moved=1.0)
    assert over.passed is False and over.figure == pytest.approx(3e-5, rel=1e-3)
    within = checks.compare("data_parallel", CPU, weights, shifted, moved=1.0)
    assert within.passed is True  # 3e-5 is within the data-parallel tolerance (1e-4)
    # Identical weights prove nothing when training hardly moved them.
    still = checks.compare("resume", CPU, weights, weights, moved=1e-5)
    assert still.passed is False and still.figure == 0.0
    with pytest.raises(ValueError, match="different weights"):
        checks.max_difference(weights, {"w": weights["w"]})


def test_precision_and_metrics_fail_on_wrong_figures() -> None:
    good = checks.ShortFit(losses=[0.7, 0.6, 0.5], linear_dtypes={torch.float32},
                           weight_dtypes={torch.float32},
                           summary={"peak_gpu_memory_mb": None, "gpu_utilization_percent": None})
    assert checks.check_precision(good, CPU).passed is True
    assert checks.check_metrics(good, CPU).passed is True
    rising = checks.ShortFit(**{**vars(good), "losses": [0.5, 0.6, 0.7]})
    assert checks.check_precision(rising, CPU).passed is False
    diverged = checks.ShortFit(**{**vars(good), "losses": [0.7, math.nan, 0.5]})
    failed = checks.check_precision(diverged, CPU)
    assert failed.passed is False and failed.figure is None and "NOT finite" in failed.detail
    bf16_on_cpu = checks.ShortFit(**{**vars(good), "linear_dtypes": {torch.bfloat16}})
    assert checks.check_precision(bf16_on_cpu, CPU).passed is False
    gpu_figures = checks.ShortFit(**{**vars(good), "summary": {
        "peak_gpu_memory_mb": 12.0, "gpu_utilization_percent": None}})
    metrics = checks.check_metrics(gpu_figures, CPU)
    assert metrics.passed is False and metrics.figure == 12.0


def test_a_check_that_raises_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(device: torch.device, seed: int) -> checks.Row:
        raise RuntimeError("NCCL unavailable")

    monkeypatch.setattr(checks, "check_data_parallel", broken)
    assert checks.main(["--checks", "data_parallel", "--seed", "3"]) == 1
    [row] = report(capsys.readouterr().out)["rows"]
    assert row["passed"] is False and row["figure"] is None
    assert row["detail"] == "raised RuntimeError: NCCL unavailable"
