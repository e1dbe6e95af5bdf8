"""Training progress: Rich's live bar on a terminal, plain lines in a log (Modal's log stream, nohup, CI).

A live bar in a file shows only its last frame; a log needs lines written as they happen. The lines go through
`logging`, so that Hydra's handlers put each one, flushed, in stdout and in the run's train.log.
"""

import logging
import sys
import time
from datetime import timedelta

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger(__name__)


def progress_reporter(every_n_steps: int | None = None, every_n_seconds: float | None = 30) -> ProgressBar:
    """The one place that chooses how progress is shown: by whether stdout is a terminal."""
    if sys.stdout.isatty():
        return EpochBar()
    return LogProgress(every_n_steps, every_n_seconds)


class EpochBar(RichProgressBar):
    """Rich's live bar with its epochs counted from 1, as in the log lines and checkpoint names (Lightning's own
    reads `Epoch 0/0` for a one-epoch run)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}/{_count(self.trainer.max_epochs)}"
        # padded as Lightning pads it, so that the bar does not jump when validation's bar shows
        return f"{description:{len(self.validation_description)}}"


class LogProgress(ProgressBar):
    """A line every `every_n_steps` training steps or `every_n_seconds` seconds, whichever comes first (None:
    not by that measure): epoch, step/total, loss, images/s since the last line, and the ETA of the fit. Then
    one line per epoch with its metrics, validation's included. Rank zero only."""

    def __init__(
        self, every_n_steps: int | None = None, every_n_seconds: float | None = 30, clock=time.monotonic
    ):
        super().__init__()
        self.every_n_steps, self.every_n_seconds, self.clock = every_n_steps, every_n_seconds, clock
        self.enabled = True
        self._fit_start = self._last_line = self._epoch_start = 0.0
        self._first_step = 0  # the global step this process started from (a resumed fit starts later)
        self._steps = self._images = 0  # since the last line

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer, pl_module):
        self._fit_start = self._last_line = self.clock()
        self._first_step = trainer.global_step

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._steps += 1
        self._images += len(batch[1]) * trainer.world_size
        now = self.clock()
        due_by_steps = self.every_n_steps is not None and self._steps >= self.every_n_steps
        due_by_time = self.every_n_seconds is not None and now - self._last_line >= self.every_n_seconds
        if self.enabled and (due_by_steps or due_by_time):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            rate = self._images / (now - self._last_line) if now > self._last_line else float("nan")
            log.info(
                "%s step %d/%s, loss %.4f, %.1f images/s, ETA %s",
                self._epoch(trainer), batch_idx + 1, _count(self.total_train_batches),
                float(loss), rate, self._eta(trainer, now),
            )  # fmt: skip
            self._last_line, self._steps, self._images = now, 0, 0

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.enabled:
            return
        # The metrics the model shows in a progress bar (prog_bar=True), as epoch values.
        metrics = {
            name.removesuffix("_epoch"): value
            for name, value in sorted(trainer.progress_bar_metrics.items())
            if not name.endswith("_step")
        }
        summary = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        log.info("%s done in %.1f s: %s", self._epoch(trainer), self.clock() - self._epoch_start, summary)

    @staticmethod
    def _epoch(trainer) -> str:
        return f"epoch {trainer.current_epoch + 1}/{_count(trainer.max_epochs)}"

    def _eta(self, trainer, now: float) -> str:
        """The rest of the fit at this process's pace so far (validation included); unknown for an open end."""
        done, total = trainer.global_step - self._first_step, trainer.estimated_stepping_batches
        if done <= 0 or total == float("inf"):
            return "unknown"
        seconds = (total - trainer.global_step) * (now - self._fit_start) / done
        return str(timedelta(seconds=round(max(0.0, seconds))))


def _count(value) -> str:
    return "?" if value is None or value == float("inf") or value < 0 else str(int(value))
