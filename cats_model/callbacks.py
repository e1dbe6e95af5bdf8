"""Callbacks and plugins the training entry adds to every run."""

import time

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cats_model.atomic import atomic_path


def synced_now(device: torch.device) -> float:
    """The time once the device has finished the work queued so far (a GPU runs ahead of the Python code)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class TrainSpeed(L.Callback):
    """Training images per second over whole epochs, data loading included and validation excluded."""

    def __init__(self):
        self.epochs: list[tuple[int, float]] = []  # (images, seconds) of each finished training epoch
        self._epoch_images = 0
        self._epoch_start = self._val_start = None
        self._val_seconds = 0.0

    @property
    def images_per_sec(self) -> float | None:
        seconds = sum(s for _, s in self.epochs)
        return sum(i for i, _ in self.epochs) / seconds if seconds > 0 else None

    @property
    def last_epoch_images_per_sec(self) -> float | None:
        return self.epochs[-1][0] / self.epochs[-1][1] if self.epochs else None

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_images, self._val_seconds = 0, 0.0
        self._epoch_start = synced_now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._epoch_images += len(batch[1]) * trainer.world_size

    def on_validation_start(self, trainer, pl_module):
        self._val_start = synced_now(pl_module.device)

    def on_validation_end(self, trainer, pl_module):
        if self._epoch_start is not None and self._val_start is not None:
            self._val_seconds += synced_now(pl_module.device) - self._val_start

    def on_train_epoch_end(self, trainer, pl_module):
        if self._epoch_start is None:  # an epoch resumed mid-way (from a mid-epoch checkpoint): not measured
            return
        seconds = synced_now(pl_module.device) - self._epoch_start - self._val_seconds
        self.epochs.append((self._epoch_images, seconds))
        if self.images_per_sec:
            pl_module.log("train/images_per_sec", self.images_per_sec, rank_zero_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written beside their target and renamed into place: a kill mid-write leaves the old one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if "://" in str(path):  # remote filesystems (s3://, gs://) have their own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
