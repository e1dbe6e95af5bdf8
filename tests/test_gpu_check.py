"""scripts/gpu_check.sh, the check prepared for a lent GPU machine, runs here as its CPU dry run: every check
passes and the JSON holds what the GPU run will report."""

import datetime
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# Every path a paid Modal run takes: what the check must run on a GPU.
CHECKS = ["train", "resume_after_kill", "train_ddp", "train_jpeg", "predict", "export", "bench"]


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_as_out_gets_a_file_named_by_gpu_and_date(tmp_path):
    output_file = gpu_check_module().output_file
    day = datetime.date(2026, 12, 1)
    assert output_file(tmp_path, {"gpu": "NVIDIA H200"}, day) == tmp_path / "nvidia-h200-2026-12-01.json"
    assert output_file(tmp_path / "new", {"gpu": None}, day) == tmp_path / "new" / "cpu-2026-12-01.json"
    assert output_file(tmp_path / "mine.json", {"gpu": "NVIDIA H200"}, day) == tmp_path / "mine.json"


def test_the_header_states_the_checks_time_limit_and_leaves_room_within_8_minutes():
    header = (ROOT / "scripts" / "gpu_check.sh").read_text()
    budget_s = gpu_check_module().GPU.budget_s
    assert f"within {budget_s} s of the start" in header and "within about 8 minutes" in header
    assert budget_s + 45 <= 8 * 60  # room to start Python and write the JSON: fits a lease of 10-minute calls


def test_a_rerun_of_some_checks_brings_the_checkpoint_they_need():
    parse_args = gpu_check_module().parse_args
    assert parse_args(["--only", "export"]).only == {"export", "train"}
    assert parse_args(["--only", "bench,train_ddp"]).only == {"bench", "train_ddp"}
    assert parse_args([]).only == set(CHECKS)


def test_the_precision_and_device_are_read_from_what_lightning_says(caplog):
    module = gpu_check_module()
    for precision in ("bf16-mixed", "32-true"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            L.Trainer(accelerator="cpu", precision=precision, logger=False)
        said = "\n".join(record.getMessage() for record in caplog.records)
        assert module.precision_used(said) == precision
        assert "GPU available: False, used: False" in said and not module.gpu_used(said)
    assert module.gpu_used("GPU available: True (cuda), used: True")


@pytest.mark.slow
def test_the_dry_run_on_the_cpu_passes_every_check(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "gpu_check.sh"),
            "--cpu",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checks"] == {name: "passed" for name in CHECKS}
    machine, figures = report["machine"], report["figures"]
    assert (machine["gpu"], machine["torch"], machine["cuda"]) == (
        None,
        torch.__version__,
        torch.version.cuda,
    )
    for name in ("train", "resume_after_kill", "train_ddp", "train_jpeg"):
        assert figures[name]["precision"] == "32-true" and 0 <= figures[name]["test/acc"] <= 1, name
        assert figures[name]["train_images_per_sec"] > 0, name
    assert figures["resume_after_kill"]["resumed_from_epoch"] == 0
    # The DDP strategy's process group, on one device as on a GPU.
    assert figures["train_ddp"]["processes"] == 1
    assert figures["predict"]["images"] == 24 and figures["predict"]["device"] == "cpu"
    export = figures["export"]
    assert export["max_abs_logit_diff"] <= 1e-4 * max(1, export["max_abs_logit"]) and export["classes"] == 12
    assert figures["bench"]["input_pipeline"]["ratio"] > 0 and figures["bench"]["framework"]["ratio"] > 0
    assert figures["bench"]["accelerator"] == "not measured: no GPU"
    log = (tmp_path / report["log"]).read_text()
    assert all(f"===== {name}: python" in log for name in CHECKS)
