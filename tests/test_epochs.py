"""Epochs are counted from 1 wherever a person reads them: log lines, checkpoint names, the plots, the live bar
and metrics.json (the end-to-end agreement: tests/test_train.py)."""

import lightning as L
import torch

from cats_model.callbacks import RunCheckpoint
from cats_model.plots import epoch_curves
from cats_model.progress import EpochBar


def test_the_live_bar_of_a_one_epoch_run_reads_epoch_1_of_1():
    bar = EpochBar()
    bar._trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False
    )
    assert bar._get_train_description(0).strip() == "Epoch 1/1"


def test_a_checkpoint_is_named_after_the_epoch_it_ends(tmp_path):
    callback = RunCheckpoint(
        dirpath=tmp_path, filename="best-epoch{epoch:03d}-acc{val/acc:.4f}", auto_insert_metric_name=False
    )
    # Lightning's current_epoch is 6 during the seventh epoch
    name = callback.format_checkpoint_name({"epoch": torch.tensor(6), "val/acc": torch.tensor(0.9375)})
    assert name == str(tmp_path / "best-epoch007-acc0.9375.ckpt")


def test_the_training_curves_count_from_1_and_name_the_loss_as_the_log_does(tmp_path):
    log = tmp_path / "metrics.csv"  # as Lightning's CSV logger writes it: epochs from 0
    log.write_text(
        "epoch,step,train/loss_epoch,train/acc,val/loss,val/acc\n"
        "0,2,2.5,0.1,,\n0,2,,,2.4,0.2\n1,5,2.0,0.4,,\n1,5,,,1.9,0.5\n"
    )
    curves = epoch_curves(log)
    assert curves == {
        "train/loss": {1: 2.5, 2: 2.0},
        "train/acc": {1: 0.1, 2: 0.4},
        "val/loss": {1: 2.4, 2: 1.9},
        "val/acc": {1: 0.2, 2: 0.5},
    }
