"""Hostile input to training and to the files around a model: extreme aspect ratios, a run folder that names code
to run, SIGTERM, class names that look like markup, lock files that are links, run names that are paths, a full
disk."""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FAST, assert_one_line_error, run_cli_in_process
from isolated import run_python
from tiny_models import tiny_checkpoint

from cats_model.callbacks import AtomicCheckpointIO
from cats_model.errors import SIGTERM_EXIT, UserError
from cats_model.export import main as export_main
from cats_model.plots import confusion_matrix_png
from cats_model.run_folder import LOCK_FILE, hold

DECODE_COST = """
import json, os, sys
from PIL import Image
from cats_model.data.cache import decode_square
from cats_model.inference import ModelInfo, read_image
from isolated import memory_mb, reset_peak_memory

info = ModelInfo(("a", "b"), "tiny", 32, (0.5,) * 3, (0.25,) * 3)
shapes = []
reset_peak_memory(os.getpid())
before = memory_mb(os.getpid())
for size in ((1, 40_000), (40_000, 1)):
    Image.new("RGB", size, (200, 100, 50)).save(sys.argv[1] + "/odd.png")
    shapes.append(list(read_image(sys.argv[1] + "/odd.png", info).shape))
    shapes.append(list(decode_square(sys.argv[1] + "/odd.png", 37).shape))
print(json.dumps({"shapes": shapes, "growth_mb": memory_mb(os.getpid(), "VmHWM") - before}))
"""


def test_an_extreme_aspect_ratio_costs_what_the_output_needs(tmp_path):
    # Resized whole to the shorter side of 37 px (a 32 px model), a 1x40000 image would become 37x1.5M pixels:
    # over 200 MiB, for a file of a few hundred bytes. Cropped to its centre square first, it is nothing.
    result = run_python(
        DECODE_COST, str(tmp_path), env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout)
    assert measured["shapes"] == [[3, 32, 32], [37, 37, 3]] * 2
    assert measured["growth_mb"] < 50, measured


@pytest.fixture
def handed_over_run(tmp_path) -> tuple[Path, Path]:
    """A run folder someone hands over: a checkpoint, and a stored config whose data is for the test to write."""
    run = tmp_path / "run"
    return tiny_checkpoint(run / "checkpoints" / "best.ckpt"), run / ".hydra" / "config.yaml"


@pytest.mark.parametrize(
    "data, sentence",
    [
        (
            "{_target_: shutil.copyfile, src: SOURCE, dst: MARKER}",
            "names data._target_='shutil.copyfile', not one of this project's datasets",
        ),
        (
            "{_target_: cats_model.data.datamodule.FolderDataModule, root: SOURCE, num_workers: 100000}",
            "data.num_workers=100000 is not a valid value",
        ),
    ],
)
def test_export_int8_reads_a_run_folder_as_data_and_runs_nothing_it_names(
    handed_over_run, data, sentence, capsys
):
    checkpoint, config = handed_over_run
    marker = config.parent.parent / "written"
    config.parent.mkdir(parents=True)
    config.write_text(f"data: {data.replace('SOURCE', str(checkpoint)).replace('MARKER', str(marker))}\n")
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(checkpoint), "--out", str(config.parent.parent / "model.onnx"), "--int8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and sentence in err and err.count("\n") == 1, err
    assert "--calibration DIR" in err or "expected" in err
    assert not marker.exists() and not (config.parent.parent / "model.onnx").exists()


@pytest.mark.slow
def test_training_stopped_by_sigterm_exits_non_zero_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    process = subprocess.Popen(
        [sys.executable, "-m", "cats_model.train", *overrides, "trainer.max_epochs=100", "print_config=false",
         f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "last.ckpt").exists():  # training is under way
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)  # as timeout, docker stop, systemd and Slurm do
        _, stderr = process.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == SIGTERM_EXIT == 143
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: training stopped by SIGTERM before it finished")
    assert not (run_dir / "metrics.json").exists()


def test_class_names_that_look_like_mathtext_are_drawn_as_text(tmp_path):
    names = ["$\\foo{$ tabby", "50$ cat", "Bengal"]
    path = confusion_matrix_png(tmp_path / "confusion.png", names, [[1, 0, 0], [0, 2, 0], [0, 1, 1]])
    assert Path(path).stat().st_size > 1000


@pytest.mark.parametrize("kind", ["symbolic link", "folder"])
def test_a_lock_file_that_is_a_link_or_a_folder_is_one_line_and_nothing_is_written(tmp_path, kind):
    run_dir, outside = tmp_path / "run", tmp_path / "precious.txt"
    run_dir.mkdir()
    outside.write_text("keep me\n")
    if kind == "folder":
        (run_dir / LOCK_FILE).mkdir()
    else:
        (run_dir / LOCK_FILE).symlink_to(outside)
    with pytest.raises(UserError) as error:
        with hold(run_dir):
            pass
    assert str(error.value).startswith(f"{run_dir / LOCK_FILE} is ")
    assert "remove it, then run again" in str(error.value)
    assert outside.read_text() == "keep me\n"


def test_a_run_name_that_is_a_path_is_refused_before_any_folder_is_made(tmp_path):
    outputs = tmp_path / "outputs"
    result = run_cli_in_process(
        *FAST, "run_name=../../elsewhere/x", env_extra={"CATS_MODEL_OUTPUT_DIR": str(outputs)}
    )
    assert_one_line_error(result, "error: run_name='../../elsewhere/x' must be one folder name")
    assert not (tmp_path / "elsewhere").exists() and not outputs.exists()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG, as on a full disk, in this process until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error for the writer, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, ignored)


def test_no_room_for_a_checkpoint_is_one_line_and_the_previous_one_stays(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"the previous checkpoint")
    weights = {"weights": torch.zeros(1 << 20)}  # 4 MiB
    with pytest.raises(UserError) as error, file_size_limit(1 << 20):
        AtomicCheckpointIO().save_checkpoint(weights, str(last))
    assert str(error.value).startswith(
        f"no room to write {last} (File too large): the checkpoints written before"
    ) and "\n" not in str(error.value)
    assert last.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["last.ckpt"]
