"""launch/serve_app.py against modal.yml, and its class serving a trained checkpoint offline via .local()."""

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import FAST
from modal._partial_function import _find_partial_methods_for_user_cls
from modal._partial_function import _PartialFunctionFlags as Flags
from modal_service import client_process, modal_command

from cats_model.cloud import settings as settings_module
from cats_model.cloud.calls import load_modal_app
from cats_model.cloud.served_run import served_checkpoint
from cats_model.cloud.settings import MODAL_YML, Settings, load_settings
from cats_model.config import compose_train_config
from cats_model.errors import UserError
from cats_model.inference import load_model
from cats_model.paths import PROJECT_ROOT
from cats_model.predict import predict_files
from cats_model.run_layout import best_checkpoint
from cats_model.serve.options import ServeOptions
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
def run(tmp_path_factory) -> Path:
    """A finished run folder (FAST: a tiny model in seconds), as training leaves it on the outputs volume."""
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train_config([*FAST, "print_config=false"], run_dir))
    return run_dir


@pytest.fixture
def volume(modal_client, monkeypatch) -> Path:
    """The outputs volume on the offline Modal service (what `modal deploy` reads from this machine), and the
    outputs mount of the class's .local() body pointed at it."""
    outputs = modal_client.volume_path("cats-model-outputs")
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(outputs))
    return outputs


def put_run(volume: Path, name: str = "r0") -> None:
    """A finished run on the volume, with a placeholder checkpoint (enough for a deployment, not for serving)."""
    (volume / "runs" / name / "checkpoints").mkdir(parents=True)
    (volume / "runs" / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (volume / "runs" / name / "metrics.json").write_text("{}")


@pytest.fixture
def serve_app(volume):
    """The app as deployed from a volume holding one finished run, `r0`."""
    put_run(volume)
    return load_serve_app()


@pytest.fixture
def outputs(volume, run) -> Path:
    """The outputs volume holding the finished run `r1`, and a newer unfinished `r2`."""
    shutil.copytree(run, volume / "runs" / "r1")
    (volume / "runs" / "r2" / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", volume / "runs" / "r2" / "checkpoints")
    return volume


def test_modal_yml_holds_only_the_serving_options_it_changes(declared):
    """ServeOptions holds the defaults, local and deployed alike; modal.yml names only what a deployment changes."""
    defaults = asdict(ServeOptions())
    assert all(defaults.get(key) != value for key, value in declared["options"].items()), declared["options"]


def test_deploy_refuses_serving_options_out_of_range_or_unknown_in_one_line(volume, monkeypatch, capsys):
    put_run(volume)
    raw = load_settings().raw
    for options, sentence in (
        ({"max_wait_ms": -1}, "modal.yml serve.options.max_wait_ms must be a number in [0, 1000], got -1"),
        ({"max_wait": 5}, "modal.yml serve.options.max_wait is not a serving option (did you mean "
                          "modal.yml serve.options.max_wait_ms?)"),
    ):  # fmt: skip
        changed = Settings({**raw, "serve": {**raw["serve"], "options": options}})
        monkeypatch.setattr(settings_module, "load_settings", lambda changed=changed: changed)
        with pytest.raises(SystemExit) as exit_info:
            load_serve_app()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {sentence}")


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
    assert declared["run"] == "latest" and serve_app.run == "r0"  # the latest finished run, decided at deploy
    assert serve_app.SERVER_OPTIONS["enable_memory_snapshot"] is declared["memory_snapshot"] is True
    snapshot = _find_partial_methods_for_user_cls(serve_app.Server._get_user_cls(), Flags.ENTER_PRE_SNAPSHOT)
    assert list(snapshot) == ["load"]  # the CPU model is in the snapshot
    assert not service._source_info_.is_serialized()  # imported by name in the container, not pickled


def image_commands(service, image_id: str) -> list[str]:
    """The Dockerfile commands of an image the service was given, its base layers' first."""
    image = service.images[image_id]
    base = [c for layer in image.base_images for c in image_commands(service, layer.image_id)]
    return base + list(image.dockerfile_commands)


def test_deploying_reads_the_app_without_importing_torch_on_this_machine(volume, modal_client):
    """`modal deploy` imports launch/serve_app.py here (the run decided from the volume, the options checked):
    torch and Lightning are the container's to import (4 s of CPU on the deploying machine before, measured)."""
    put_run(volume)
    heavy = ("torch", "torchvision", "torchmetrics", "lightning")
    imported = client_process(
        modal_client,
        "-c",
        f"import sys; sys.path.insert(0, {str(APP_FILE.parent)!r}); import serve_app; "
        f"print(serve_app.run, [m for m in {heavy!r} if m in sys.modules])",
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.split() == ["r0", "[]"]


def test_deploy_refuses_a_run_that_is_not_on_the_outputs_volume_in_one_line(volume, modal_client):
    def deploy(run: str = ""):
        return modal_command(
            modal_client, "deploy", str(APP_FILE), env={"CATS_MODEL_SERVE_RUN": run}, timeout=300
        )

    refused = deploy()
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        "error: no finished run on the outputs volume cats-model-outputs (none has runs/NAME/metrics.json): "
        "train one first, or name a run with serve.run in modal.yml or CATS_MODEL_SERVE_RUN"
    ]
    put_run(volume, "day")
    (volume / "runs" / "running" / "checkpoints").mkdir(parents=True)  # started, no checkpoint yet
    for run in ("night", "running"):
        refused = deploy(run)
        assert refused.returncode == 2 and refused.stderr.splitlines() == [
            f"error: serve run {run!r} has no checkpoint on the outputs volume cats-model-outputs "
            f"(runs/{run}/checkpoints/); `modal volume ls cats-model-outputs runs/` lists the runs"
        ]
    assert "tiny-cats-model-serve" not in modal_client.deployed

    deployed = deploy()
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "tiny-cats-model-serve" in modal_client.deployed
    [server] = [f.definition for f in modal_client.functions.values() if f.tag.startswith("Server")]
    assert server.checkpointing_enabled  # memory snapshots
    build = "\n".join(image_commands(modal_client, server.image_id))
    assert "ENV CATS_MODEL_SERVE_RUN=day" in build  # `latest`, decided at deploy
    assert load_settings().cpu_torch_index_url in build and "nvidia-" not in build  # CPU-only torch
    assert modal_client.unanswered == [] and modal_client.faults == []


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
def test_the_class_serves_the_latest_finished_run_offline(declared, outputs):
    app = (
        load_serve_app().Server().web.local()
    )  # runs @modal.enter (loads the checkpoint), then builds the app
    checkpoint = best_checkpoint(outputs / "runs" / "r1")
    assert checkpoint.name.startswith("best-")
    photos = sorted(
        str(p) for p in (Path(compose_train_config(FAST).data.root) / "images").glob("[A-Z]*.jpg")
    )[:3]
    expected = predict_files(load_model(checkpoint, "cpu"), photos, k=2)
    with TestClient(app) as client:
        about = client.get("/model").json()
        assert about["file"] == checkpoint.name and about["metrics"]["test/acc"] is not None
        assert about["limits"] == {**asdict(ServeOptions()), **declared["options"]}
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
            assert exit_info.value.code == 2
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
    assert best_checkpoint(run_dir) is None
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path))
    with pytest.raises(UserError, match="holds no checkpoint"):
        served_checkpoint("moved")
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no finished run under .* train one first"):
        served_checkpoint("latest")
