"""Mistakes a user makes end in one line on stderr and a non-zero exit, not a traceback."""

import socket

import pytest
from test_train import run_cli

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
