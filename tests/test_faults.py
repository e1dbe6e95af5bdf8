"""Preemption at any moment: kill training with SIGKILL at distinct points, restart it, and check nothing is lost."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST
from faults import POINTS

EPOCHS = 3
# The epoch that last.ckpt holds right after a kill at each point (the kill comes in epoch 1 of 0..2).
SAVED_EPOCH_AT_KILL = {
    "fit_start": None,
    "train_batch": 0,
    "validation": 0,
    "checkpoint_write": 0,
    "after_checkpoint": 1,
    "test": 2,
}
TESTS_DIR = Path(__file__).resolve().parent


def run(run_dir: Path, point: str, marker: Path) -> subprocess.CompletedProcess:
    overrides = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    env = {**os.environ, "PYTHONPATH": f"{TESTS_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "cats_model.train", *overrides, f"trainer.max_epochs={EPOCHS}",
         f"hydra.run.dir={run_dir}", "+callbacks.fault._target_=faults.KillAt", f"+callbacks.fault.point={point}",
         "+callbacks.fault.epoch=1", f"+callbacks.fault.marker={marker}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def assert_checkpoints_load(checkpoints: Path) -> None:
    for path in checkpoints.glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # raises on a truncated file
        assert "state_dict" in checkpoint and "loops" in checkpoint, path


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_training_resumes_and_finishes(tmp_path, point):
    run_dir, marker = tmp_path / "run", tmp_path / "killed"
    killed = run(run_dir, point, marker)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert marker.read_text() == point
    assert_checkpoints_load(run_dir / "checkpoints")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (torch.load(last, weights_only=True)["epoch"] if last.exists() else None) == SAVED_EPOCH_AT_KILL[
        point
    ]

    restarted = run(run_dir, point, marker)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == EPOCHS
    assert_checkpoints_load(run_dir / "checkpoints")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == EPOCHS - 1
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "a half-written checkpoint was left behind"
    if point == "fit_start":
        assert metrics["resumed_from"] is None  # killed before any checkpoint: starts over, nothing to lose
    else:
        assert metrics["resumed_from"] == str(last)
