"""Training progress a person can follow: a line at least every `interval_s` of wall time
(after every step when one step takes longer).

Step-count cadences alone leave a slow CPU run silent for many minutes; the training loop
calls `ProgressReporter.update` after every optimizer step and reports what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

PROGRESS_INTERVAL_S = 30.0
# Keys of a progress report (numbers only, so it crosses the torchrun stdout pipe as JSON).
STEP, STEPS, EPOCH, EPOCHS = "progress/step", "progress/steps", "progress/epoch", "progress/epochs"
SAMPLES_PER_S, ETA_S = "progress/samples_per_s", "progress/eta_s"


class ProgressReporter:
    """Decides when a progress line is due and measures speed and ETA for it.

    Samples/s is over the rows since the previous line; the ETA uses the mean step time
    since `start`, which is steadier than the last window."""

    def __init__(self, total_steps: int, epochs: int, start_step: int = 0,
                 interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total_steps, self.epochs = total_steps, epochs
        self.interval_s, self.clock = interval_s, clock
        self.start(start_step)

    def start(self, step: int) -> None:
        """Measure from now, at `step` (non-zero when training resumes from a checkpoint)."""
        self._start_time = self._last_time = self.clock()
        self._start_step = step
        self._rows = 0

    def update(self, step: int, epoch: int, rows: int) -> dict[str, float] | None:
        """After optimizer step `step` (1-based) of `epoch` (1-based), which took `rows`
        samples: a progress report when `interval_s` has passed since the last, else None."""
        now = self.clock()
        self._rows += rows
        if now - self._last_time < self.interval_s:
            return None
        per_step = (now - self._start_time) / max(step - self._start_step, 1)
        report = {
            STEP: float(step), STEPS: float(self.total_steps),
            EPOCH: float(epoch), EPOCHS: float(self.epochs),
            SAMPLES_PER_S: self._rows / max(now - self._last_time, 1e-9),
            ETA_S: per_step * max(self.total_steps - step, 0),
        }
        self._last_time, self._rows = now, 0
        return report


def progress_line(report: Mapping[str, float]) -> str | None:
    """`epoch 1/4, step 40/880 (4.5%), 18.3 samples/s, ETA 12:34` for a progress report;
    None for any other metrics."""
    if STEP not in report:
        return None
    step, steps = int(report[STEP]), int(report[STEPS])
    minutes, seconds = divmod(round(report[ETA_S]), 60)
    return (f"epoch {int(report[EPOCH])}/{int(report[EPOCHS])}, step {step}/{steps} "
            f"({100 * step / max(steps, 1):.1f}%), {report[SAMPLES_PER_S]:.1f} samples/s, "
            f"ETA {minutes:02d}:{seconds:02d}")
