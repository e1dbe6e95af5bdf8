"""launch/serve_app.py against modal.yml, and its class serving a trained checkpoint offline via .local()."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import FAST

from cats_model.cloud.calls import load_modal_app
from cats_model.cloud.settings import MODAL_YML
from cats_model.config import compose_train_config
from cats_model.errors import UserError
from cats_model.inference import load_model
from cats_model.paths import PROJECT_ROOT
from cats_model.predict import predict_files
from cats_model.serve.runs import best_checkpoint, served_checkpoint
from cats_model.train import train

APP_FILE = PROJECT_ROOT / "launch" / "serve_app.py"


def load_serve_app():
    """launch/serve_app.py loaded afresh (its run is decided on import), as Modal's CLI loads it."""
    sys.modules.pop("serve_app", None)
    return load_modal_app("serve_app")


@pytest.fixture(scope="module")
def declared() -> dict:
    return yaml.safe_load(MODAL_YML.read_text())["serve"]


@pytest.fixture(scope="module")
def serve_app():
    return load_serve_app()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run folder (FAST: a tiny model in seconds), as training leaves it on the outputs volume."""
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train_config([*FAST, "print_config=false"], run_dir))
    return run_dir


@pytest.fixture
def outputs(tmp_path, monkeypatch, run) -> Path:
    """The outputs mount redirected to a folder holding the finished run `r1`, and a newer unfinished `r2`."""
    outputs = tmp_path / "outputs"
    shutil.copytree(run, outputs / "runs" / "r1")
    (outputs / "runs" / "r2" / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", outputs / "runs" / "r2" / "checkpoints")
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(outputs))
    return outputs


def test_the_server_class_matches_modal_yml(serve_app, declared):
    assert serve_app.app.name == declared["app_name"] == "tiny-cats-model-serve"
    service = serve_app.Server._get_class_service_function()
    info = service.info()  # built locally: no token, no network
    assert (list(info.cpu), list(info.memory_mib), info.timeout) == (
        declared["cpu"],
        declared["memory"],
        declared["timeout"],
    )
    assert info.gpus == ([] if declared["gpu"] is None else [(declared["gpu"], 1)])
    assert info.concurrency_info.max_inputs == declared["concurrency"]
    assert {mount: volume.name for mount, volume in info.volumes.items()} == {
        "/outputs": "cats-model-outputs"
    }
    assert info.method_names == ["web"] and info.method_details["web"] is not None  # the ASGI app
    assert serve_app.SERVER_OPTIONS["scaledown_window"] == declared["scaledown_window"]
    assert serve_app.run == declared["run"] == "latest"
    assert not service._source_info_.is_serialized()  # imported by name in the container, not pickled


def test_no_serve_setting_is_written_in_the_app_file(declared):
    source = APP_FILE.read_text()
    for literal in (
        declared["app_name"],
        "cats-model-outputs",
        '"/outputs"',
        str(declared["concurrency"]),
        "300",
    ):
        assert literal not in source, f"{literal} belongs in modal.yml only"


@pytest.mark.slow
def test_the_class_serves_the_latest_finished_run_offline(serve_app, declared, outputs):
    app = serve_app.Server().web.local()  # runs @modal.enter (loads the checkpoint), then builds the app
    checkpoint = best_checkpoint(outputs / "runs" / "r1")
    assert checkpoint.name.startswith("best-")
    photos = sorted(
        str(p) for p in (Path(compose_train_config(FAST).data.root) / "images").glob("[A-Z]*.jpg")
    )[:3]
    expected = predict_files(load_model(checkpoint, "cpu"), photos, k=2)
    with TestClient(app) as client:
        about = client.get("/model").json()
        assert about["file"] == checkpoint.name and about["metrics"]["test/acc"] is not None
        assert {k: about["limits"][k] for k in declared["options"]} == declared["options"]
        files = [("file", (Path(p).name, Path(p).read_bytes())) for p in photos]
        answer = client.post("/predict", files=files, data={"top_k": "2"}).json()
    for result, row in zip(answer["results"], expected):
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in row["predictions"]]


@pytest.mark.slow
def test_the_run_can_be_named_without_editing_files(monkeypatch, outputs, capsys):
    monkeypatch.setenv("CATS_MODEL_SERVE_RUN", "r2")
    module = load_serve_app()
    try:
        assert module.run == "r2"
        server = module.Server()
        server.web.local()
        assert server.checkpoint == outputs / "runs" / "r2" / "checkpoints" / "last.ckpt"  # no best in r2
        # Names that would fail in every container, refused at `modal deploy` before anything is built; the
        # second is what `modal volume ls cats-model-outputs runs/` shows.
        for bad in ("../escape", "runs/20261129-151200-3f2a", "r2 ", "a/../../etc"):
            monkeypatch.setenv("CATS_MODEL_SERVE_RUN", bad)
            with pytest.raises(SystemExit) as exit_info:
                load_serve_app()
            assert exit_info.value.code == 1
            assert capsys.readouterr().err.strip() == (
                f"error: serve run {bad!r} is not 'latest' or a run name (letters, digits, '.', '_', '-')"
            )
    finally:
        monkeypatch.delenv("CATS_MODEL_SERVE_RUN")
        load_serve_app()


def test_the_best_checkpoint_is_found_inside_the_run_folder(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "moved"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("last.ckpt", "best-epoch001-acc0.5.ckpt", "best-epoch003-acc0.7.ckpt"):
        (checkpoints / name).write_bytes(b"x")
        time.sleep(0.01)
    os.utime(checkpoints / "best-epoch001-acc0.5.ckpt")  # the newest file, but not the one the metrics name
    metrics = {"best_model_path": "/outputs/runs/elsewhere/checkpoints/best-epoch003-acc0.7.ckpt"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert best_checkpoint(run_dir) == checkpoints / "best-epoch003-acc0.7.ckpt"  # moved runs still work
    (checkpoints / "best-epoch003-acc0.7.ckpt").unlink()
    assert best_checkpoint(run_dir) == checkpoints / "best-epoch001-acc0.5.ckpt"
    (checkpoints / "best-epoch001-acc0.5.ckpt").unlink()
    assert best_checkpoint(run_dir) == checkpoints / "last.ckpt"
    (checkpoints / "last.ckpt").unlink()
    with pytest.raises(UserError, match="holds no checkpoint"):
        best_checkpoint(run_dir)
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no finished run under .* train one first"):
        served_checkpoint("latest")
