"""Hydra multirun through the Modal launcher plugin: Hydra's own launcher suites, then real sweeps offline."""

import json
import subprocess
import sys

import pytest
from conftest import FAST
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from test_modal_app import REMOTE_CPU

from cats_model.cloud import entry


@pytest.fixture(autouse=True)
def default_version_base():
    """Hydra's suites expect an app that sets no version_base; importing cats_model.train sets 1.3 process-wide.
    (conftest's isolated_hydra restores the previous state afterwards.)"""
    Singleton._instances.pop(VersionBase, None)  # the next use starts from "unspecified"


def test_the_launcher_is_discovered():
    assert "ModalLauncher" in [launcher.__name__ for launcher in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("modal", ["hydra.launcher.backend=local"])])
class TestModalLauncherLocalBackend(LauncherTestSuite):
    """Hydra's launcher conformance suite, against the local backend."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {"defaults": [{"override hydra/launcher": "modal"}]},
            ["-m", "hydra.launcher.backend=local"],
        )
    ],
)
class TestModalLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real applications run with `-m` in their own processes."""


def read_summary(sweep_dir):
    return json.loads((sweep_dir / "summary.json").read_text())


@pytest.mark.slow
def test_local_backend_sweep_writes_every_job_and_a_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    result = subprocess.run(
        [sys.executable, "-m", "cats_model.train", "-m", "hydra/launcher=modal", "hydra.launcher.backend=local",
         *overrides, "trainer.max_epochs=1,2", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job, epochs in ((0, 1), (1, 2)):
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert metrics["epoch"] == epochs
        assert (sweep_dir / str(job) / "checkpoints" / "last.ckpt").is_file()
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert sum(r["best"] for r in rows) == 1
    best = max(rows, key=lambda r: r["val/acc_best"])
    assert best["best"] and "trainer.max_epochs=" in best["overrides"]
    header = (sweep_dir / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("job,overrides,status,val/acc_best,test/acc,duration_s,cost_usd,best")
    assert "best by val/acc_best" in result.stdout


@pytest.mark.slow
def test_modal_backend_fans_out_train_calls_isolates_failures_and_resumes(
    modal_app, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "volume"))
    sweep_dir = tmp_path / "sweep"
    # `modal run launch/modal_app.py -- -m ...` takes this path; .local() stands in for .remote().
    args = ("--", "-m", *REMOTE_CPU, "optimizer.name=adamw,nonexistent", f"hydra.sweep.dir={sweep_dir}")
    with pytest.raises(SystemExit) as failed:  # Hydra ends a sweep with a failed job non-zero, after all ran
        entry.main(args, prepare_data=modal_app.prepare_data.local, train=modal_app.train.local)
    assert failed.value.code != 0
    rows = read_summary(sweep_dir)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "unknown optimizer 'nonexistent'" in rows[1]["error"]
    assert rows[0]["best"] and rows[0]["cost_usd"] > 0
    run_names = sorted(p.name for p in (tmp_path / "volume" / "runs").iterdir())
    assert len(run_names) == 2 and run_names[0] != run_names[1]
    first = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert first["run_dir"].startswith(str(tmp_path / "volume" / "runs"))
    assert first["resumed_from"] is None

    # The same sweep again (same sweep dir), one epoch longer: each job resumes its run on the volume.
    args = ("-m", *REMOTE_CPU, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep_dir}")
    entry.main(args, prepare_data=modal_app.prepare_data.local, train=modal_app.train.local)
    again = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert again["run_dir"] == first["run_dir"]
    assert again["resumed_from"] == first["run_dir"] + "/checkpoints/last.ckpt" and again["epoch"] == 2


@pytest.mark.slow
def test_optuna_sweeper_drives_the_launcher(tmp_path):
    sweep_dir = tmp_path / "optuna"
    result = subprocess.run(
        [sys.executable, "-m", "cats_model.train", "hparams_search=optuna_lr", "hydra/launcher=modal",
         "hydra.launcher.backend=local", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
         "~hydra.sweeper.params.model", *FAST, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_summary(sweep_dir)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert "best_value" in (sweep_dir / "optimization_results.yaml").read_text()
