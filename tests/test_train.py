"""End to end on synthetic data: the CLI a user types, the metrics it writes, and resume."""

import csv
import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import QUICK_START
from helpers import FAST, run_cli

from cats_model.checkpoint import load_classifier
from cats_model.config import compose_train_config
from cats_model.plots import epoch_curves
from cats_model.train import train


def csv_epochs(run_dir) -> list[int]:
    """The epochs that logged validation accuracy, in file order."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/acc")]


NOISE = (
    "litlogger",  # Lightning's tip
    "LeafSpec",  # torch's deprecation, triggered by Lightning
    "exists and is not empty",  # a resumed run's own checkpoints
    "Trainer already configured with model summary callbacks",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "FLOPs",  # 0 without an example input
    "is smaller than the logging interval",
    "Restoring states from the checkpoint path",  # the summary block names the checkpoint
    "Restored all states from the checkpoint",  # a resumed run says "resuming from" in its own words
    "0.9999998807907104",  # Lightning's test table: the block has 4 digits
)


def assert_no_library_noise(result: subprocess.CompletedProcess) -> None:
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise


def assert_epochs_agree(run_dir, result: subprocess.CompletedProcess) -> dict:
    """The best epoch is the same number in metrics.json, the checkpoint's name, the log line of that epoch, the
    curves and the summary block: all count from 1."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, epochs, acc = metrics["best_epoch"], metrics["epoch"], metrics["val/acc_best"]
    assert os.path.basename(metrics["best_model_path"]) == f"best-epoch{best:03d}-acc{acc:.4f}.ckpt"
    assert f"epoch {best}/{epochs} done in" in next(
        line for line in result.stdout.splitlines() if f"val/acc {acc:.4f}" in line
    )
    assert epoch_curves(run_dir / "csv" / "metrics.csv")["val/acc"][best] == pytest.approx(acc)
    assert f"best epoch {best} of {epochs}: val/acc {acc:.4f}" in result.stdout
    return metrics


def summary_in(stdout: str) -> list[str]:
    """The block that ends the run's output: what follows its `run finished` line."""
    lines = stdout.splitlines()
    return lines[max(i for i, line in enumerate(lines) if line.endswith("run finished")) + 1 :]


@pytest.mark.slow
def test_cli_learns_synthetic_data_then_resumes_with_more_epochs(quick_start, tmp_path):
    # The README's quick start, run from elsewhere than the checkout: paths must not depend on the cwd.
    folder, first = quick_start
    run_dir = folder / "run"
    assert_no_library_noise(first)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.90, metrics
    # The synthetic dogs trained a cat-or-not head: the test split's dogs rejected, its cats kept (issue 26).
    assert metrics["test/dog_rejection"] >= 0.95 and metrics["test/cat_recall"] >= 0.98, metrics
    assert 0 < metrics["cat_threshold"] < 1 and metrics["max_false_reject"] == 0.02
    assert metrics["epoch"] == 10 and metrics["resumed_from"] is None
    for key in ("val/acc_best", "best_model_path", "wall_time_s", "train_images_per_sec", "per_class_acc"):
        assert metrics[key] is not None, key
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert os.path.isfile(metrics["best_model_path"])
    assert csv_epochs(run_dir) == list(range(10))
    assert_epochs_agree(run_dir, first)
    # The block ends stdout and train.log: the run folder, scores to 4 digits, and commands to paste.
    block = summary_in(first.stdout)
    assert block == summary_in((run_dir / "train.log").read_text())
    assert block[0] == "run folder: run"  # under the working directory: shown from there
    assert f"test acc {metrics['test/acc']:.4f}" in block[1]
    assert block[3] == f"best checkpoint: {os.path.relpath(metrics['best_model_path'], folder)}"
    assert (
        block[-1]
        .strip()
        .startswith(
            f"python -m cats_model.train {' '.join(QUICK_START)} hydra.run.dir=run trainer.max_epochs=20"
        )
    )

    run_dir = tmp_path / "run"  # the shared run stays as it is: this one resumes a copy
    shutil.copytree(folder / "run", run_dir)
    second = run_cli(*QUICK_START, f"hydra.run.dir={run_dir}", "trainer.max_epochs=12", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_no_library_noise(second)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 12
    assert csv_epochs(run_dir) == list(range(12))  # the earlier rows kept, no epoch run twice


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint_and_can_be_declined(tmp_path):
    one = train(compose_train_config(FAST, tmp_path))
    steps_per_epoch = one["global_step"]
    assert one["epoch"] == 1 and steps_per_epoch > 0

    two = train(compose_train_config([*FAST, "trainer.max_epochs=3"], tmp_path))
    assert two["resumed_from"].endswith("last.ckpt")
    assert (two["epoch"], two["global_step"]) == (3, 3 * steps_per_epoch)

    done = train(compose_train_config([*FAST, "trainer.max_epochs=3"], tmp_path))
    assert (done["epoch"], done["global_step"]) == (3, 3 * steps_per_epoch)  # nothing left to train

    fresh = train(compose_train_config([*FAST, "trainer.max_epochs=1", "resume=false"], tmp_path))
    assert fresh["resumed_from"] is None and fresh["global_step"] == steps_per_epoch


@pytest.mark.slow
def test_checkpoint_is_usable_without_the_config(tmp_path):
    metrics = train(compose_train_config(FAST, tmp_path))
    checkpoint = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["class_names"] == metrics["classes"] and len(hparams["class_names"]) == 12
    assert hparams["backbone"] == "mobilenet_v3_small"
    assert hparams["image_size"] == 32
    assert hparams["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert hparams["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert hparams["optimizer"]["_target_"] == "torch.optim.AdamW"  # a string: weights_only loading works
    model = load_classifier(metrics["best_model_path"])
    assert model.class_names == metrics["classes"]

    # A checkpoint whose optimizer and scheduler are named the older way ({"name": ...}) still loads: loading
    # never builds them.
    checkpoint["hyper_parameters"].update(
        optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        scheduler={"name": "warmup_cosine", "warmup_epochs": 1, "min_lr_ratio": 0.01},
    )
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_classifier(older)(images), model(images))

    # The synthetic dogs gave it a cat-or-not head, its threshold saved with it; a checkpoint from before there
    # was one (no such hyper-parameters, one output per breed) loads as the breed-only model it is.
    assert (
        hparams["cat_head"]
        and 0 < hparams["cat_threshold"] < 1
        and model.cat_threshold == hparams["cat_threshold"]
    )
    for key in ("cat_head", "max_false_reject", "cat_threshold"):
        del checkpoint["hyper_parameters"][key]
    head = [k for k in checkpoint["state_dict"] if k.startswith("net.classifier.3.")]
    for key in head:
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:12]
    torch.save(checkpoint, older)
    breeds_only = load_classifier(older)
    assert breeds_only.cat_threshold is None and breeds_only.heads(images)[1] is None
    with torch.no_grad():
        assert torch.equal(breeds_only(images), model(images))


@pytest.mark.slow
def test_warmup_as_long_as_the_run_trains(tmp_path):
    # No step is left for the cosine decay after the warm-up: the schedule must still be defined.
    metrics = train(
        compose_train_config([*FAST, "trainer.max_epochs=2", "scheduler.warmup_epochs=2"], tmp_path)
    )
    assert metrics["epoch"] == 2
