"""Timed training progress lines (trending_assets/ml/progress.py), on a clock the test
moves, so the 30-second cadence is checked without sleeping."""

from __future__ import annotations

import pytest

from tests.helpers.bert import CPU, loop_settings, table, tiny_network
from trending_assets.ml.bert.loop import fit
from trending_assets.ml.progress import ProgressReporter, progress_line


class FakeClock:
    def __init__(self, step_s: float = 0.0) -> None:
        self.now, self.step_s = 1000.0, step_s

    def __call__(self) -> float:
        value = self.now
        self.now += self.step_s  # a clock that moves on by itself at every reading
        return value


def test_a_line_every_30_seconds_with_speed_and_eta() -> None:
    clock = FakeClock()
    reporter = ProgressReporter(total_steps=40, epochs=2, clock=clock)
    lines = {}
    for step in range(1, 21):
        clock.now += 7.0  # each step takes 7 s and 100 samples
        report = reporter.update(step, 1 + (step > 20), 100)
        if report is not None:
            lines[step] = progress_line(report)
    # 35 s after the start, then 35 s after that line (30 s are not up at 28 s, 63 s)
    assert lines == {
        5: "epoch 1/2, step 5/40 (12.5%), 14.3 samples/s, ETA 04:05",
        10: "epoch 1/2, step 10/40 (25.0%), 14.3 samples/s, ETA 03:30",
        15: "epoch 1/2, step 15/40 (37.5%), 14.3 samples/s, ETA 02:55",
        20: "epoch 1/2, step 20/40 (50.0%), 14.3 samples/s, ETA 02:20",
    }


def test_slow_steps_report_every_step_and_long_etas_count_minutes() -> None:
    clock = FakeClock()
    reporter = ProgressReporter(total_steps=1000, epochs=4, clock=clock)
    clock.now += 95.0  # a first step slower than the interval (a cold CPU start)
    report = reporter.update(1, 1, 32)
    assert report is not None
    assert progress_line(report) == (
        "epoch 1/4, step 1/1000 (0.1%), 0.3 samples/s, ETA 1581:45")


def test_a_resumed_run_measures_its_eta_from_the_resumed_step() -> None:
    clock = FakeClock()
    reporter = ProgressReporter(total_steps=100, epochs=1, start_step=60, clock=clock)
    assert reporter.update(61, 1, 8) is None  # no time passed: nothing due
    clock.now += 40.0
    report = reporter.update(62, 1, 8)
    assert progress_line(report) == "epoch 1/1, step 62/100 (62.0%), 0.4 samples/s, ETA 12:40"


def test_other_metrics_are_not_progress_lines() -> None:
    assert progress_line({"step": 20.0, "train/loss": 0.3, "train/eta_s": 796.5}) is None


@pytest.mark.parametrize("seconds_per_reading,expected_steps", [
    (31.0, list(range(1, 11))),  # every step is 31 s after the last line
    (0.0, []),  # a fast run that ends within 30 s has no timed line
])
def test_the_training_loop_reports_on_wall_time(seconds_per_reading, expected_steps) -> None:
    tokens, labels = table()  # 40 rows, batch 8, 2 epochs: 10 steps
    settings = loop_settings(epochs=2, batch_size=8, learning_rate=1e-2, seed=0,
                             log_every_steps=1000)
    reported: list[dict] = []
    fit(tiny_network(), tokens, labels, settings, CPU, on_progress=reported.append,
        clock=FakeClock(seconds_per_reading))
    lines = [line for line in map(progress_line, reported) if line is not None]
    assert len(lines) == len(expected_steps)
    assert [line.split(", ")[1].split(" (")[0] for line in lines] == [
        f"step {s}/10" for s in expected_steps]
    if lines:
        assert lines[0].startswith("epoch 1/2, step 1/10 (10.0%), ")
        assert lines[-1].startswith("epoch 2/2, step 10/10 (100.0%), ")
        assert lines[-1].endswith("samples/s, ETA 00:00")
