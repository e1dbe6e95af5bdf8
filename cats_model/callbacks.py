"""Callbacks and plugins the training entry adds to every run."""

import time

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cats_model.atomic import atomic_path


class TrainSpeed(L.Callback):
    """Training images per second over whole epochs, data loading included and validation excluded."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._epoch_start = self._val_start = None
        self._val_seconds = 0.0

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start, self._val_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[1]) * trainer.world_size

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if self._epoch_start is not None and self._val_start is not None:
            self._val_seconds += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds += time.perf_counter() - self._epoch_start - self._val_seconds
        if self.images_per_sec:
            pl_module.log("train/images_per_sec", self.images_per_sec, rank_zero_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written beside their target and renamed into place: a kill mid-write leaves the old one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if "://" in str(path):  # remote filesystems (s3://, gs://) have their own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
