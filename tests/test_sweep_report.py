"""What a sweep says about its jobs: a failed job in one line with the reason a person can act on, the table
of a sweep run here on demand, counts that read right, and no folder left by a sweep that never started."""

import contextlib
import io
import json
import os
import re
import signal
from pathlib import Path

import pytest
from helpers import FAST, run_cli_in_process

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
def test_a_local_sweep_runs_each_job_alone_and_reports_its_failed_ones_in_one_line_each(
    tmp_path, monkeypatch
):
    outputs, sweep_dir = tmp_path / "outputs", tmp_path / "sweep"
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(outputs))
    # Jobs 2 and 3 fail on a value only their own process checks (the Trainer's, which depend on its hardware);
    # job 1 is SIGKILLed at its first batch, as by the OOM killer; job 0 trains (its fault's epoch never comes).
    kill = ["+callbacks.fault._target_=faults.KillAt", "+callbacks.fault.point=train_batch",
            f"+callbacks.fault.marker={tmp_path / 'killed'}"]  # fmt: skip
    # The sweep's own process is this one; each job's runs apart, and finds the fault callbacks by PYTHONPATH.
    result = run_cli_in_process(
        "-m", "hydra/launcher=modal", "hydra.launcher.backend=local", *FAST, *kill, "trainer.precision=32-true,bogus",
        "+callbacks.fault.epoch=9,0", f"hydra.sweep.dir={sweep_dir}",
        env_extra={"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert "executing locally" not in output  # Modal's warning about the volumes the local run redirects
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert [r["status"] for r in rows] == ["completed", "failed", "failed", "failed"]
    assert rows[0]["best"] and rows[0]["cost_usd"] is None  # nothing paid on this machine
    # Each job's run lives where a Modal call puts it, the outputs folder standing for the volume.
    name = re.search(r"sweep (\S+): 4 jobs submitted", result.stdout)[1]
    runs = [outputs / "runs" / f"{name}-{job}" for job in range(4)]
    assert [r["run_dir"] for r in rows] == [str(run) for run in runs]  # where each run's files are
    assert sorted((outputs / "runs").iterdir()) == runs
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["run_dir"] == str(runs[0])
    header = (sweep_dir / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("job,overrides,status,val/acc_best,test/acc,duration_s,cost_usd,best")
    last = (runs[1] / "train.log").read_text().strip().splitlines()[-1]
    killed = (
        f"job 1 failed: training of run {name}-1 failed: killed by the system (SIGKILL): out of memory?; "
        f"its last line: {last}"
    )
    assert killed in result.stdout.splitlines()
    for job in (2, 3):  # the training process's own user error, in one line, never retried
        assert f"job {job} failed: trainer.precision='bogus' is not a valid value" in result.stdout
        assert rows[job]["error"].startswith("trainer.precision='bogus' is not a valid value")
        assert "\n" not in rows[job]["error"]
        assert json.loads((runs[job] / "launch.json").read_text())["status"] == "failed"
    # The sweep ends on one line of its own, not on Hydra's report of the first failed job.
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: 3 of 4 jobs failed: the lines below the table say why"
    )
    assert "Error executing job" not in output

    # The table again, later, without Modal: by the sweep's folder or by its name.
    assert f"python -m cats_model.cloud summary {name}" in result.stdout
    table = cloud("summary", str(sweep_dir))
    assert table == cloud("summary", name)
    lines = table.splitlines()
    # Read from each run's record, which tells the process that died from the value it refused.
    assert [line.split()[:4] for line in lines[2:6]] == [
        ["*0", "trainer.precision=32-true", "+callbacks.fault.epoch=9", "completed"],
        ["1", "trainer.precision=32-true", "+callbacks.fault.epoch=0", "crashed"],
        ["2", "trainer.precision=bogus", "+callbacks.fault.epoch=9", "failed"],
        ["3", "trainer.precision=bogus", "+callbacks.fault.epoch=0", "failed"],
    ]
    assert f"job 1 failed: killed by the system (SIGKILL): out of memory?; its last line: {last}" in lines
    for job in (2, 3):
        assert any(
            line.startswith(f"job {job} failed: trainer.precision='bogus' is not a valid") for line in lines
        )
