"""Preemption at any moment (SIGKILL at distinct points, restart, nothing lost), and damaged or shared run folders."""

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import forked
import pytest
import torch
from faults import POINTS
from helpers import FAST, fast_without

from cats_model.config import compose_train_config
from cats_model.errors import UserError
from cats_model.run_folder import hold
from cats_model.train import train

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


def fault_overrides(run_dir: Path, point: str, marker: Path) -> list[str]:
    return [
        *fast_without("trainer.max_epochs"),
        f"trainer.max_epochs={EPOCHS}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.fault._target_=faults.KillAt",
        f"+callbacks.fault.point={point}",
        "+callbacks.fault.epoch=1",
        f"+callbacks.fault.marker={marker}",
    ]


def killed_run(run_dir: Path, point: str, marker: Path) -> subprocess.CompletedProcess:
    """The training command with the fault callback, in a process of its own (the kill needs one), forked with
    torch and Lightning imported (tests/forked.py)."""
    return forked.run_cli(*fault_overrides(run_dir, point, marker))


def assert_checkpoints_load(checkpoints: Path) -> None:
    for path in checkpoints.glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # raises on a truncated file
        assert "state_dict" in checkpoint and "loops" in checkpoint, path


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_training_resumes_and_finishes(tmp_path, point, monkeypatch):
    run_dir, marker = tmp_path / "run", tmp_path / "killed"
    killed = killed_run(run_dir, point, marker)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert marker.read_text() == point
    assert_checkpoints_load(run_dir / "checkpoints")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (torch.load(last, weights_only=True)["epoch"] if last.exists() else None) == SAVED_EPOCH_AT_KILL[
        point
    ]

    # The same command again, in this process: the marker keeps the fault from firing twice. The callback's
    # stand-in for torch.save (point checkpoint_write) is put back after the test.
    monkeypatch.setattr(torch, "save", torch.save)
    train(compose_train_config([*fault_overrides(run_dir, point, marker), "print_config=false"], run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == EPOCHS
    assert_checkpoints_load(run_dir / "checkpoints")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == EPOCHS - 1
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "a half-written checkpoint was left behind"
    if point == "fit_start":
        assert metrics["resumed_from"] is None  # killed before any checkpoint: starts over, nothing to lose
    else:
        assert metrics["resumed_from"] == str(last)


# Damaged or shared run folders: each test damages its own copy of one trained run (2 epochs).
def train_in(run_dir: Path, *overrides: str) -> dict:
    return train(compose_train_config([*FAST, "print_config=false", *overrides], run_dir))


def user_error_of(run_dir: Path, *overrides: str) -> str:
    """The one line training in `run_dir` stops with: what the training command prints after "error: " (exit 2;
    that path is held by test_errors' command-line tests)."""
    with pytest.raises(UserError) as error:
        train_in(run_dir, *overrides)
    assert "\n" not in str(error.value), error.value
    return str(error.value)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train_in(run_dir, "trainer.max_epochs=2")
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def best_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.slow
def test_a_copied_run_folder_tests_on_its_own_best_checkpoint(trained_run, tmp_path):
    copy = copy_of(trained_run, tmp_path)
    before = {path: path.stat().st_mtime_ns for path in trained_run.rglob("*")}
    metrics = train_in(copy, "trainer.max_epochs=2")
    assert metrics["best_model_path"] == str(best_checkpoints(copy)[0])
    assert {
        path: path.stat().st_mtime_ns for path in trained_run.rglob("*")
    } == before  # the original untouched


@pytest.mark.slow
def test_a_deleted_best_checkpoint_falls_back_to_the_last_weights(trained_run, tmp_path, caplog):
    copy = copy_of(trained_run, tmp_path)
    (best,) = best_checkpoints(copy)
    best.unlink()
    metrics = train_in(copy, "trainer.max_epochs=2")  # nothing left to train: only the test runs
    assert f"checkpoint {best} is gone: forgotten" in caplog.text
    assert metrics["best_model_path"] is None and metrics["val/acc_best"] is None
    assert metrics["test/acc"] is not None and metrics["resumed_from"] == str(
        copy / "checkpoints" / "last.ckpt"
    )

    more = train_in(copy, "trainer.max_epochs=3")  # the next validation saves a new best
    assert more["best_model_path"] == str(best_checkpoints(copy)[0]) and more["val/acc_best"] is not None


@pytest.mark.slow
def test_a_damaged_last_checkpoint_resumes_from_the_one_before(trained_run, tmp_path, caplog):
    copy = copy_of(trained_run, tmp_path)
    checkpoints = copy / "checkpoints"
    last, previous = checkpoints / "last.ckpt", checkpoints / "last-previous.ckpt"
    assert torch.load(previous, weights_only=True)["epoch"] == 0  # kept when epoch 1 replaced it
    damaged = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(damaged)
    metrics = train_in(copy, "trainer.max_epochs=3")
    assert f"{last} is unreadable, truncated or not a checkpoint" in caplog.text
    assert metrics["resumed_from"] == str(previous) and metrics["epoch"] == 3
    assert (checkpoints / "last.ckpt.damaged").read_bytes() == damaged  # kept for a look, never resumed from
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert torch.load(previous, weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_no_good_last_checkpoint_is_one_line_and_resume_false_starts_over(trained_run, tmp_path):
    copy = copy_of(trained_run, tmp_path)
    checkpoints = copy / "checkpoints"
    (checkpoints / "last.ckpt").write_bytes(b"garbage")
    (checkpoints / "last-previous.ckpt").write_bytes(b"")
    old = {path.name: path.read_bytes() for path in checkpoints.iterdir()}
    line = user_error_of(copy, "trainer.max_epochs=3")
    assert line.startswith(
        f"cannot resume: {checkpoints}/last.ckpt is unreadable, truncated or not a checkpoint"
    ), line
    assert f"{checkpoints}/last-previous.ckpt is unreadable" in line
    assert "start over with resume=false (which keeps the old checkpoints in checkpoints.old-<time>/)" in line
    assert {path.name: path.read_bytes() for path in checkpoints.iterdir()} == old  # nothing moved or changed

    metrics = train_in(copy, "trainer.max_epochs=1", "resume=false")
    assert metrics["resumed_from"] is None and metrics["epoch"] == 1
    (aside,) = copy.glob("checkpoints.old-*")
    assert {path.name: path.read_bytes() for path in aside.iterdir()} == old  # moved aside whole, not deleted
    assert [p.name for p in best_checkpoints(copy)] == [
        Path(metrics["best_model_path"]).name
    ]  # one best only
    assert sorted(p.name for p in checkpoints.glob("last*")) == ["last.ckpt"]


def hold_until_killed(run_dir: Path, held) -> None:
    with hold(run_dir):
        held.set()
        time.sleep(600)


@pytest.mark.slow
def test_a_run_folder_is_used_by_one_training_at_a_time(tmp_path):
    run_dir = tmp_path / "run"
    held = forked.CONTEXT.Event()
    holder = forked.start(hold_until_killed, run_dir, held)
    try:
        assert held.wait(120), "the holder did not take the folder"
        line = user_error_of(run_dir)
        assert line.startswith(
            f"{run_dir} is in use by another training (pid {holder.pid} on {socket.gethostname()} since "
        ), line
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()
    finally:
        forked.stop(holder)  # SIGKILL: the kernel releases its lock
    with hold(run_dir):  # free again: a killed holder leaves no stale lock
        pass


@pytest.mark.slow
def test_a_multi_process_run_is_not_stopped_by_its_own_lock(tmp_path):
    # DDP relaunches the training command for rank 1 into the same folder: only rank 0 holds the folder. (Through
    # a Modal container's body, with the config it is sent: tests/test_modal_app.py.)
    # A rank stopped by the lock would leave the other waiting for it: the timeout ends that as a failure.
    ddp = [*FAST, "trainer.devices=2", "+trainer.strategy=ddp", f"hydra.run.dir={tmp_path / 'run'}"]
    result = forked.run_cli(*ddp, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 1
