"""What a sweep says about its jobs: a failed job in one line with the reason a person can act on, the table
of a sweep run here on demand, counts that read right, and no folder left by a sweep that never started."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST

from cats_model.cloud.__main__ import main as cloud_main
from cats_model.cloud.ending import how_it_ended
from cats_model.cloud.sweep_folder import removed_if_nothing_ran
from cats_model.cloud.sweep_summary import count_jobs
from cats_model.errors import UserError

TESTS_DIR = Path(__file__).resolve().parent


def test_a_killed_process_is_explained_and_quoted_by_the_line_it_wrote_last(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "[t1][cats_model.data][INFO] - data: 12 classes\n[t2][cats_model.progress][INFO] - epoch 3/9\n\n"
    )
    early = (
        "Loading `train_dataloader` to estimate number of stepping batches."  # stderr's last, minutes older
    )
    assert how_it_ended(-signal.SIGKILL, early, log) == (
        "killed by the system (SIGKILL): out of memory?; its last line: [t2][cats_model.progress][INFO] - epoch 3/9"
    )
    assert how_it_ended(-signal.SIGTERM, early, tmp_path / "none.log").endswith(
        f"(SIGTERM); its last line: {early}"
    )
    # A record of several lines (the model summary's table) is quoted by its first line, which says what it is.
    log.write_text(
        "[t1][cats_model.callbacks][INFO] - model: 1.5 M parameters\n   Name  Type\n0  net   MobileNet\n"
    )
    assert how_it_ended(-signal.SIGKILL, early, log).endswith(
        "its last line: [t1][cats_model.callbacks][INFO] - model: 1.5 M parameters"
    )
    # An exception ends a process with its own line on stderr: that is the one to quote.
    assert how_it_ended(1, "RuntimeError: boom", log) == "exit code 1; its last line: RuntimeError: boom"


def test_counts_read_right():
    assert [count_jobs(n) for n in (0, 1, 2)] == ["0 jobs", "1 job", "2 jobs"]


def test_a_sweep_that_never_started_leaves_no_folder_and_a_rerun_keeps_its_own(tmp_path):
    fresh, rerun = tmp_path / "fresh", tmp_path / "rerun"
    for folder in (fresh, rerun):
        folder.mkdir()
        (folder / "multirun.yaml").write_text("{}")
    (rerun / "0").mkdir()
    for folder in (fresh, rerun):
        with pytest.raises(UserError), removed_if_nothing_ran(folder):
            raise UserError("Modal is not authenticated")
    assert not fresh.exists() and (rerun / "multirun.yaml").is_file()


def cloud(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cloud_main(list(args))
    return out.getvalue()


@pytest.mark.slow
def test_a_local_sweep_reports_its_failed_jobs_in_one_line_each(tmp_path, monkeypatch):
    outputs, sweep_dir = tmp_path / "outputs", tmp_path / "sweep"
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(outputs))
    # Job 0 fails on a value its own process checks; job 1 is SIGKILLed at its first batch, as by the OOM killer.
    kill = ["+callbacks.fault._target_=faults.KillAt", "+callbacks.fault.point=train_batch",
            "+callbacks.fault.epoch=0", f"+callbacks.fault.marker={tmp_path / 'killed'}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "cats_model.train", "-m", "hydra/launcher=modal", "hydra.launcher.backend=local",
         *FAST, *kill, "trainer.precision=bogus,32-true", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert "executing locally" not in output  # Modal's warning about the volumes the local run redirects
    rows = json.loads((sweep_dir / "summary.json").read_text())
    name = re.search(r"sweep (\S+): 2 jobs submitted", result.stdout)[1]
    runs = [outputs / "runs" / f"{name}-{job}" for job in (0, 1)]
    assert [r["run_dir"] for r in rows] == [str(run) for run in runs]  # where each run's files are
    last = (runs[1] / "train.log").read_text().strip().splitlines()[-1]
    assert (
        f"job 1 failed: training of run {name}-1 failed: killed by the system (SIGKILL): out of memory?; "
        f"its last line: {last}"
    ) in result.stdout.splitlines()
    assert "job 0 failed: trainer.precision='bogus' is not a valid value" in result.stdout
    # The sweep ends on one line of its own, not on Hydra's report of the first failed job.
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: 2 of 2 jobs failed: the lines below the table say why"
    )
    assert "Error executing job" not in output

    # The table again, later, without Modal: by the sweep's folder or by its name.
    assert f"python -m cats_model.cloud summary {name}" in result.stdout
    table = cloud("summary", str(sweep_dir))
    assert table == cloud("summary", name)
    for table in cloud("summary", str(sweep_dir)), cloud("summary", name):
        lines = table.splitlines()
        assert [line[:30].rstrip() for line in lines[2:4]] == [
            " 0   trainer.precision=bogus",
            " 1   trainer.precision=32-true",
        ]
        assert lines[-1].startswith("job 1 failed: ")
        assert lines[-1].endswith(f"(SIGKILL): out of memory?; its last line: {last}")
