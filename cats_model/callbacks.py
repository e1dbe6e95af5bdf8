"""Callbacks and plugins of every run: checkpoints that stay consistent with their run folder, throughput."""

import errno
import logging
import os
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from cats_model.atomic import atomic_path
from cats_model.errors import UserError
from cats_model.run_layout import previous_checkpoint

log = logging.getLogger(__name__)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota reached, file size limit


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
        try:
            # Through a Python file: a full disk is an OSError with its errno (given a path, torch.save says only
            # "unexpected pos").
            with atomic_path(path) as tmp, open(tmp, "wb") as file:
                torch.save(checkpoint, file)
        except (OSError, RuntimeError) as err:
            full = no_room(err)
            if full is None:
                raise
            raise UserError(
                f"no room to write {path} ({full.strerror}): the checkpoints written before are intact; free some "
                "space, then run the same command again to resume"
            ) from err


def no_room(err: BaseException | None) -> OSError | None:
    """The OSError of a full disk behind `err` (torch's zip writer raises its own error while handling it)."""
    while err is not None and not (isinstance(err, OSError) and err.errno in NO_ROOM):
        err = err.__cause__ or err.__context__
    return err


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch a checkpoint was saved in, counted from 1 as in its name and the log (Lightning stores it from
    0). Memory-mapped: only that number is read."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"] + 1


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose files always belong to its own folder.

    Lightning keeps absolute paths in the callback's state (best_model_path, best_k_models) and reloads them on
    resume: a run folder that was moved or copied would test on the old folder's best checkpoint, and one whose
    best checkpoint was deleted would fail to test at all. Restored paths are re-rooted to this callback's
    folder, and files that are gone are forgotten with a warning (the next validation saves a new best; until
    then the test runs on the last weights). With `keep_previous`, the file being replaced is kept as
    `<name>-previous.ckpt` (a hard link, so no copy), to resume from if the newest one turns out damaged.
    """

    def __init__(self, *args, keep_previous: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_previous = keep_previous

    def load_state_dict(self, state_dict: dict) -> None:
        if self.dirpath is None:  # not set up: nothing to re-root to
            return super().load_state_dict(state_dict)
        here = self._here
        state = {
            **state_dict,
            "dirpath": self.dirpath,
            "best_model_path": here(state_dict.get("best_model_path", "")),
            "kth_best_model_path": here(state_dict.get("kth_best_model_path", "")),
            "last_model_path": here(state_dict.get("last_model_path", "")),
            "best_k_models": {
                here(path): score for path, score in state_dict.get("best_k_models", {}).items()
            },
        }
        super().load_state_dict(state)
        if self.monitor is None:  # the last checkpoint: rewritten each time, whatever is there
            return
        gone = {
            path for path in [*self.best_k_models, self.best_model_path] if path and not os.path.isfile(path)
        }
        for path in sorted(gone):
            log.warning(
                "checkpoint %s is gone: forgotten; the next validation saves a new best, until then the test "
                "runs on the last weights",
                path,
            )
            self.best_k_models.pop(path, None)
        if self.best_model_path in gone:
            pick = min if self.mode == "min" else max
            self.best_model_path = pick(self.best_k_models, key=self.best_k_models.get, default="")
            self.best_model_score = self.best_k_models.get(self.best_model_path)

    def format_checkpoint_name(self, metrics, filename=None, ver=None, prefix=None) -> str:
        # A file is named after the epoch it was saved in, counted from 1 as in the log (Lightning counts from 0).
        if "epoch" in metrics:
            metrics = {**metrics, "epoch": metrics["epoch"] + 1}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    def _here(self, path: str) -> str:
        return os.path.join(self.dirpath, os.path.basename(path)) if path else path

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self.keep_previous and trainer.is_global_zero and os.path.isfile(filepath):
            with atomic_path(previous_checkpoint(filepath)) as tmp:
                try:
                    os.link(filepath, tmp)
                except OSError:  # a filesystem without hard links
                    shutil.copyfile(filepath, tmp)
        super()._save_checkpoint(trainer, filepath)


class ModelSummary(LightningModelSummary):
    """The model's layers and size at the start of a fit, as lines of the run's log (so also in train.log).

    Without Lightning's FLOPs column and total: Lightning counts FLOPs only on an example input, which this
    model cannot be given before its batch transforms, so they would read 0.
    """

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:  # fmt: skip
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]
        rows = [[name for name, _ in columns], *zip(*(values for _, values in columns))]
        table = "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)
        log.info(
            "model: %s parameters (%s trainable), %s MB\n%s",
            get_human_readable_count(total_parameters), get_human_readable_count(trainable_parameters),
            get_formatted_model_size(model_size), table,
        )  # fmt: skip
