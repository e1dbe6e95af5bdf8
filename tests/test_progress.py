"""Progress where output is not a terminal: lines in stdout and train.log, written while the run goes on."""

import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import fast_without
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from cats_model.config import compose_train_config
from cats_model.instantiators import instantiate_callbacks
from cats_model.progress import LogProgress, progress_reporter

TESTS_DIR = Path(__file__).resolve().parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_bar_and_a_log_gets_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(progress_reporter(), RichProgressBar)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    callbacks = instantiate_callbacks(
        compose_train_config(["callbacks.progress_bar.every_n_steps=7"], tmp_path).callbacks
    )
    (progress,) = [c for c in callbacks if isinstance(c, LogProgress)]
    assert (progress.every_n_steps, progress.every_n_seconds) == (7, 30)


class Linear(L.LightningModule):
    """Batches of (inputs, labels), as the project's."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        loss = torch.nn.functional.cross_entropy(self.layer(inputs), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lines_by_time_with_rate_and_eta(caplog):
    """On a clock that moves one second per reading: a line once 3 s have passed since the last one."""
    readings = iter(range(1, 1000))
    progress = LogProgress(every_n_steps=None, every_n_seconds=3, clock=lambda: float(next(readings)))
    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, callbacks=[progress], logger=False, enable_checkpointing=False,
        enable_model_summary=False,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="cats_model.progress"):
        trainer.fit(Linear(), DataLoader(data, batch_size=4))
    lines = [
        re.sub(r"loss \d+\.\d{4}", "loss L", r.getMessage())
        for r in caplog.records
        if r.name == "cats_model.progress"
    ]
    # Readings: fit start 1, epoch start 2, one per step (step 2 reads 4, step 5 reads 7...), epoch end 13.
    assert lines[:4] == [
        "epoch 1/2 step 2/10, loss L, 2.7 images/s, ETA 0:00:27",  # 8 images in 3 s; 18 steps left at 1.5 s
        "epoch 1/2 step 5/10, loss L, 4.0 images/s, ETA 0:00:18",  # 15 steps left at 6 s / 5 steps
        "epoch 1/2 step 8/10, loss L, 4.0 images/s, ETA 0:00:14",
        "epoch 1/2 done in 11.0 s: train/loss L",
    ]
    assert lines[-2:] == [
        "epoch 2/2 step 10/10, loss L, 4.0 images/s, ETA 0:00:00",
        "epoch 2/2 done in 11.0 s: train/loss L",
    ]


@pytest.mark.slow
def test_piped_training_prints_each_epoch_while_it_runs(tmp_path):
    """The run is held at the start of its second epoch until the test has read the first epoch's line from the
    pipe (and from train.log): had the lines waited for the end of the run, it could never have gone on."""
    run_dir, go = tmp_path / "run", tmp_path / "go"
    # A DataLoader worker process loads the batches: the suite's other runs load in their own process.
    overrides = [
        *fast_without("trainer.max_epochs", "callbacks.progress_bar", "data.num_workers"),
        "data.num_workers=1",
    ]
    env = {**os.environ, "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(tmp_path / "stderr", "w") as stderr:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cats_model.train",
                *overrides,
                "trainer.max_epochs=2",
                f"hydra.run.dir={run_dir}",
                "callbacks.progress_bar.every_n_steps=2",
                "+callbacks.gate._target_=gate.WaitForFile",
                f"+callbacks.gate.path={go}",
                "+callbacks.gate.before_epoch=1",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        printed = []
        for line in run.stdout:
            printed.append(line)
            if "epoch 1/2 done in" in line:
                # The run is held at the gate: the line reaches train.log now (its handler comes after the
                # console's), not at the end of the run.
                assert wait_for_line_in(run_dir / "train.log", "epoch 1/2 done in")
                go.touch()  # the run may go on to its second epoch
        assert run.wait(timeout=600) == 0, (tmp_path / "stderr").read_text()[-3000:]
    assert go.exists()
    progress = [line for line in printed if "[cats_model.progress]" in line]
    assert progress[0].split(" - ")[1].startswith("epoch 1/2 step 2/")
    assert re.search(r"loss \d+\.\d+, \d+\.\d images/s, ETA \d+:\d\d:\d\d$", progress[0])
    epochs = [line.split(" - ")[1].split(":")[0] for line in progress if " done in " in line]
    assert [e.split(" done")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all(name in progress[-1] for name in ("train/loss", "train/acc", "val/loss", "val/acc"))
    logged = (run_dir / "train.log").read_text()
    assert all(line.split("] - ")[1] in logged for line in progress)


def wait_for_line_in(log: Path, text: str, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
