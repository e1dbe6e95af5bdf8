"""Fault injection for the preemption suite: a callback that SIGKILLs its own training process at a named point.

Added to a run with `+callbacks.fault._target_=faults.KillAt +callbacks.fault.point=...` (tests/ on PYTHONPATH).
It kills once: a marker file records the kill, so the restarted run goes through.
"""

import io
import os
import signal
from pathlib import Path

import lightning as L
import torch

POINTS = ("fit_start", "train_batch", "validation", "checkpoint_write", "after_checkpoint", "test")


class KillAt(L.Callback):
    def __init__(self, point: str, epoch: int, marker: str):
        assert point in POINTS, point
        self.point, self.epoch, self.marker = point, epoch, Path(marker)

    def _kill(self, point: str, epoch: int | None = None) -> None:
        if point == self.point and (epoch is None or epoch == self.epoch) and not self.marker.exists():
            self.marker.write_text(point)
            os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, trainer, pl_module, stage):
        if self.point != "checkpoint_write":
            return
        real_save = torch.save

        def save_then_die(obj, f, *args, **kwargs):
            # Half a checkpoint reaches the disk, then the process dies, as on a preemption mid-write.
            if trainer.current_epoch == self.epoch and not self.marker.exists():
                whole = io.BytesIO()
                real_save(obj, whole, *args, **kwargs)
                half = whole.getvalue()[: len(whole.getvalue()) // 2]
                if hasattr(f, "write"):  # the checkpoint IO writes through a file object
                    f.write(half)
                    f.flush()
                    os.fsync(f.fileno())
                else:
                    Path(f).write_bytes(half)
                self._kill("checkpoint_write")
            return real_save(obj, f, *args, **kwargs)

        torch.save = save_then_die

    def on_fit_start(self, trainer, pl_module):
        self._kill("fit_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 1:
            self._kill("train_batch", trainer.current_epoch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._kill("validation", trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module):
        # last.ckpt of the previous epoch has just been written
        self._kill("after_checkpoint", trainer.current_epoch - 1)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._kill("test")


class CrashAtFitStart(L.Callback):
    """A crash on every attempt: `+callbacks.crash._target_=faults.CrashAtFitStart`."""

    def on_fit_start(self, trainer, pl_module):
        raise RuntimeError("injected crash at fit start")


class KilledForMemory(L.Callback):
    """The kernel's OOM killer as a container sees it: the cgroup's oom_kill count goes up and the training process
    dies of SIGKILL. `+callbacks.oom._target_=faults.KilledForMemory`, with CATS_MODEL_MEMORY_EVENTS naming the
    file that stands for the cgroup's memory.events."""

    def on_fit_start(self, trainer, pl_module):
        events = Path(os.environ["CATS_MODEL_MEMORY_EVENTS"])
        events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        os.kill(os.getpid(), signal.SIGKILL)
