"""Mistakes a user makes end in one line on stderr and a non-zero exit, not a traceback."""

import fcntl
import socket

import pytest
from test_train import run_cli

from cats_model.failed_start import remove_if_empty

SMOKE = ["debug=smoke", "callbacks.progress_bar=null"]


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_missing_dataset_names_the_download_command(tmp_path):
    result = run_cli("debug=default", f"data.root={tmp_path}/pets", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(
        result, "error: no Oxford-IIIT Pet dataset", "bash data/download.sh", "data=synthetic"
    )
    assert not (tmp_path / "run").exists()  # no empty run folder left under outputs/runs/


@pytest.mark.slow
def test_unknown_config_choice_gets_hydras_message(tmp_path):
    result = run_cli("model=resnet999", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "Could not find 'model/resnet999'" in result.stderr


@pytest.mark.slow
def test_gpu_requested_without_one(tmp_path):
    result = run_cli(*SMOKE, "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(result, "error: trainer.accelerator=gpu but no CUDA GPU is visible")


@pytest.mark.slow
def test_pretrained_weights_that_cannot_be_fetched(tmp_path):
    # A proxy on a closed loopback port makes the download fail at once, as it would offline.
    proxy = f"http://127.0.0.1:{closed_port()}"
    result = run_cli(
        *SMOKE, "model.pretrained=true", f"model.weights_dir={tmp_path}/weights", f"hydra.run.dir={tmp_path}/run",
        env_extra={"https_proxy": proxy, "HTTPS_PROXY": proxy},
    )  # fmt: skip
    assert_one_line_error(
        result, "error: could not fetch ImageNet weights for mobilenet_v3_small", "model.pretrained=false"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()  # never trains from scratch silently


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.max_epochs=abc",
            "error: trainer.max_epochs='abc' is not a valid value: expected int or null",
        ),
        ("data.batch_size=big", "error: data.batch_size='big' is not a valid value: expected int"),
        ("model.pretrained=maybe", "error: model.pretrained='maybe' is not a valid value: expected bool"),
        ("model.backbone=resnet999", "error: unknown backbone 'resnet999': choose one of resnet18"),
    ],
)
def test_values_of_the_wrong_kind(tmp_path, override, message):
    result = run_cli(*SMOKE, override, f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_a_failed_start_removes_only_a_run_folder_with_nothing_of_its_own(tmp_path):
    def hydra_leftovers(run_dir):
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (run_dir / "train.log").write_text("[cats_model.data.datamodule][INFO] - data: 12 classes\n")
        (run_dir / ".lock").write_text("pid 1234 on host since 2026-11-30 00:00:00\n")
        return run_dir

    assert remove_if_empty(hydra_leftovers(tmp_path / "fresh"), "train.log")
    assert not (tmp_path / "fresh").exists()
    earlier = hydra_leftovers(tmp_path / "earlier")
    (earlier / "checkpoints").mkdir()  # an earlier run's work: a resume that failed keeps everything
    in_use = hydra_leftovers(tmp_path / "in-use")  # another training starting in the same folder holds it
    with open(in_use / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for kept in (earlier, in_use):
            assert not remove_if_empty(kept, "train.log")
            assert {p.name for p in kept.iterdir()} >= {".hydra", ".lock", "train.log"}


@pytest.mark.slow
def test_unknown_data_choice_lists_the_choices(tmp_path):
    result = run_cli("data=imagenet", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == "In 'train': Could not find 'data/imagenet'"
    assert "\tcat_breeds" in result.stderr


@pytest.mark.slow
def test_a_sweep_on_modal_without_credentials(tmp_path):
    result = run_cli(
        "-m", "hydra/launcher=modal", *SMOKE, "trainer.max_epochs=1,2", f"hydra.sweep.dir={tmp_path}/sweep",
        env_extra={"HOME": str(tmp_path), "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""},
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("Modal is not authenticated: run `modal token new`")


@pytest.mark.slow
def test_secrets_in_the_environment_are_never_written(tmp_path):
    secret = "as-secret-0123456789abcdef"
    result = run_cli(
        *SMOKE,
        f"hydra.run.dir={tmp_path}/run",
        env_extra={"MODAL_TOKEN_SECRET": secret, "WANDB_API_KEY": secret},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert secret not in result.stdout + result.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
