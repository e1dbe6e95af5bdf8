"""Hydra multirun through the Modal launcher plugin: Hydra's own launcher suites, then real sweeps offline.

The Modal backend's sweeps run as a user starts them (`python -m cats_model.train -m`, and `modal run
launch/modal_app.py -- -m` through Modal's own CLI), in the test's process, against the offline Modal service
(tests/modal_service.py): every call runs the real function body in a container process of its own, held
running across several polls.
"""

import json

import pytest
from conftest import started_modal_service
from helpers import APP_FILE, FAST, REMOTE_CPU, run_cli_in_process
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from modal_service import Attempt, modal_in_process, own_modal_app
from omegaconf import OmegaConf

from cats_model.cloud.settings import load_settings


@pytest.fixture(autouse=True)
def default_version_base():
    """Hydra's suites expect an app that sets no version_base; importing cats_model.train sets 1.3 process-wide.
    (conftest's isolated_hydra restores the previous state afterwards.)"""
    Singleton._instances.pop(VersionBase, None)  # the next use starts from "unspecified"


def test_the_launcher_is_discovered():
    assert "ModalLauncher" in [launcher.__name__ for launcher in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("modal", ["hydra.launcher.backend=local"])])
class TestModalLauncherLocalBackend(LauncherTestSuite):
    """Hydra's launcher conformance suite, against the local backend (other apps' task functions)."""


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


@pytest.fixture
def modal_service(tmp_path):
    """An empty data volume: the sweeps here show `prepare_data` making the data before any job starts."""
    service = started_modal_service(tmp_path / "modal")
    yield service
    service.stop()


def read_summary(sweep_dir):
    return json.loads((sweep_dir / "summary.json").read_text())


def test_a_typo_in_any_job_stops_the_sweep_before_any_job_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    result = run_cli_in_process(
        "-m", "hydra/launcher=modal", "hydra.launcher.backend=local", *FAST,
        "optimizer._target_=torch.optim.AdamW,nonexistent", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert result.returncode == 2
    # Reported as Hydra reports a launcher's error: the message, no traceback.
    assert "unknown optimizer 'nonexistent': optimizer._target_ must name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing trained, nothing paid


@pytest.mark.slow
def test_a_grid_sweep_through_modal_run_makes_one_call_per_job_on_its_gpu(
    tmp_path, modal_client, monkeypatch
):
    service = modal_client
    outputs = service.volume_path("cats-model-outputs")
    sweep_dir = tmp_path / "grid"
    # `+note`: a value resolved where it trains, never where the sweep is composed.
    note = "+note=${paths.checkpoint_dir}"
    args = ("run", str(APP_FILE), "--", "-m", *REMOTE_CPU, note, "gpu=T4,L4", f"hydra.sweep.dir={sweep_dir}")
    service.script("train", Attempt(hold_s=2), Attempt(hold_s=2))  # both seen running across several polls
    result = modal_in_process(service, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    # `modal run` started the app (ephemeral), not the launcher; then one call per job, each on its GPU.
    assert [app["state"] for app in service.apps.values()] == ["stopped"]
    trains = service.calls_of("train")
    assert [
        (c.function.option("resources").gpu_config.gpu_type, c.function.max_containers) for c in trains
    ] == [
        ("T4", 8),
        ("L4", 8),
    ]
    assert service.requests.count("FunctionGetOutputs") >= 6
    # The data and its decoded-image cache were made once, by prepare_data, before the jobs: they decode nothing.
    [prepare] = service.calls_of("prepare_data")
    assert list(service.volume_path("cats-model-data").rglob(".cache/*.npy"))
    assert "is prepared already" not in (prepare.container.folder / "log.txt").read_text()
    for train in trains:
        log = (train.container.folder / "log.txt").read_text()
        assert "metrics written to" in log and "decoding" not in log
        assert "run finished" not in log  # the entrypoint reports the run, with the commands that fetch it
    # One training per call: one run each on the volume, no sweep of their own.
    runs = sorted((outputs / "runs").iterdir())
    assert len(runs) == 2 and not (outputs / "sweeps").exists()
    first = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert all(m["epoch"] == 1 and m["resumed_from"] is None for m in first)
    assert all((run / "checkpoints" / "last.ckpt").is_file() for run in runs)
    assert all(list((run / "tensorboard").glob("events.out.tfevents.*")) for run in runs)  # Modal's loggers
    # The config each container trained is the one composed here, and the job's folder records it.
    for run, job in zip(runs, ("0", "1")):
        trained = OmegaConf.load(run / ".hydra" / "config.yaml")
        recorded = OmegaConf.load(sweep_dir / job / ".hydra" / "config.yaml")
        assert recorded.run_name == trained.run_name == run.name
        assert OmegaConf.to_container(trained)["note"] == "${paths.checkpoint_dir}"  # as typed, unresolved
        del trained.callbacks.stop_before_deadline  # what the container adds: its call's deadline
        assert recorded == trained
        assert list(trained.logger) == ["csv", "tensorboard"] and trained.gpu == ("T4", "L4")[int(job)]
    rows = read_summary(sweep_dir)
    settings = load_settings()
    for row, gpu in zip(rows, ("T4", "L4")):
        assert row["status"] == "completed"
        assert row["cost_usd"] == round(settings.cost(row["duration_s"], gpu), 4) > 0

    # The same sweep again: nothing is trained or tested again, and the table is the same.
    again = modal_in_process(service, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(service.calls_of("train")) == 2
    assert "2 of 2 jobs finished earlier with the same overrides" in again.stdout
    assert read_summary(sweep_dir) == rows

    # One epoch more: both jobs run again, each resuming its run on the volume.
    longer = modal_in_process(service, *args, "trainer.max_epochs=2")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert len(service.calls_of("train")) == 4
    # Its prepare_data call found the data prepared by the first: it built nothing (no torch, no listing).
    _, prepare_again = service.calls_of("prepare_data")
    assert "is prepared already" in (prepare_again.container.folder / "log.txt").read_text()
    for job, run in enumerate(runs):
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert metrics["epoch"] == 2 and metrics["resumed_from"].endswith(
            f"runs/{run.name}/checkpoints/last.ckpt"
        )
        assert metrics["global_step"] == 2 * first[job]["global_step"]  # the first epoch not trained again
    rows = read_summary(sweep_dir)[-2:]  # this launch's rows

    # Later, from the outputs volume alone: the same table.
    from cats_model.cloud.__main__ import summary
    from cats_model.cloud.outputs import opened

    sweep = runs[0].name.rsplit("-", 1)[0]
    with opened() as volume:  # read from here: no container
        remote_rows = summary(sweep, volume)
    assert [(r["job"], r["status"], r["val/acc_best"], r["cost_usd"]) for r in remote_rows] == [
        (r["job"], r["status"], r["val/acc_best"], r["cost_usd"]) for r in rows
    ]


@pytest.mark.slow
def test_optuna_on_the_modal_backend_trains_one_model_per_trial_and_a_failed_trial_is_recorded(
    tmp_path, modal_client
):
    modal_service = modal_client  # this process's client: the sweep runs here, its trials in containers
    sweep_dir = tmp_path / "optuna"
    attempts = load_settings().train["retries"]["max_retries"] + 1
    # The first trial held running across several polls; the second fails on every attempt.
    modal_service.script(
        "train", Attempt(hold_s=2), *[Attempt(exception="injected trial failure")] * attempts
    )
    with own_modal_app():
        result = run_cli_in_process(
            "hparams_search=optuna_lr", "hydra/launcher=modal", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2", "~hydra.sweeper.params.model", "hydra.launcher.detach=true", *REMOTE_CPU,
            f"hydra.sweep.dir={sweep_dir}",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # The launcher starts the app itself (detached: the jobs outlive this process), then one call per trial.
    assert [app["state"] for app in modal_service.apps.values()] == ["detached"]
    first, second = modal_service.calls_of("train")
    assert [o for _, o in first.history] == ["success"] and [o for _, o in second.history] == [
        "failure"
    ] * attempts
    runs = list((modal_service.volume_path("cats-model-outputs") / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    rows = read_summary(sweep_dir)
    assert sorted(r["status"] for r in rows) == ["completed", "failed"]
    assert "best_value" in (sweep_dir / "optimization_results.yaml").read_text()


@pytest.mark.slow
def test_optuna_sweeper_drives_the_local_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    sweep_dir = tmp_path / "optuna"
    result = run_cli_in_process(
        "hparams_search=optuna_lr", "hydra/launcher=modal", "hydra.launcher.backend=local",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "~hydra.sweeper.params.model", *FAST,
        f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_summary(sweep_dir)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert len(list((tmp_path / "outputs" / "runs").iterdir())) == 2
    assert "best_value" in (sweep_dir / "optimization_results.yaml").read_text()
