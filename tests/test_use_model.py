"""Using a trained checkpoint: predictions, ONNX export, the run's pictures, and the loggers."""

import csv
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import compose_train_config
from hydra.utils import get_class
from PIL import Image

from cats_model.data.oxford import CAT, OxfordPet
from cats_model.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained on the default synthetic data (about 15 s on 2 cores), and its metrics."""
    run_dir = tmp_path_factory.mktemp("trained")
    overrides = ["data=synthetic", "data.num_workers=0", "model=mobilenet_v3_small", "model.pretrained=false",
                 "trainer=cpu", "callbacks.progress_bar=null", "print_config=false"]  # fmt: skip
    metrics = train(compose_train_config(overrides, run_dir))
    return run_dir, metrics


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)


def test_predict_recognises_held_out_images_at_the_test_accuracy(trained, tmp_path):
    run_dir, metrics = trained
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root)
    held_out = [r for r in dataset.split("test") if r.species == CAT]  # the synthetic set has dogs too
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    result = cli("cats_model.predict", metrics["best_model_path"], *(str(dataset.image_path(r)) for r in held_out),
                 str(broken), "--json", "--top-k", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == len(held_out) + 1 and "error" in rows[-1]
    correct = sum(row["predictions"][0]["class"] == record.breed for row, record in zip(rows, held_out))
    assert correct / len(held_out) == pytest.approx(metrics["test/acc"], abs=0.02)
    assert all(
        len(row["predictions"]) == 2 and 0 <= row["predictions"][1]["probability"] <= 1 for row in rows[:-1]
    )

    table = cli("cats_model.predict", metrics["best_model_path"], str(dataset.images_dir / "Bengal_30.jpg"))
    assert table.returncode == 0 and "Bengal_30.jpg" in table.stdout


def test_predict_a_folder_and_refuse_a_bad_checkpoint(trained, tmp_path):
    run_dir, metrics = trained
    for i in range(3):
        Image.new("RGB", (50, 40), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
    result = cli("cats_model.predict", metrics["best_model_path"], str(tmp_path), "--json")
    assert [r["path"].rsplit("/", 1)[1] for r in json.loads(result.stdout)] == ["0.png", "1.png", "2.png"]
    missing = cli("cats_model.predict", str(tmp_path / "none.ckpt"), str(tmp_path))
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == f"error: no checkpoint at {tmp_path / 'none.ckpt'}"
    )


def test_export_writes_onnx_that_matches_pytorch(trained, tmp_path):
    import onnxruntime

    run_dir, metrics = trained
    out = tmp_path / "export" / "cats.onnx"
    result = cli("cats_model.export", metrics["best_model_path"], "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["class_names"] == metrics["classes"] and sidecar["image_size"] == 64
    assert sidecar["mean"] == pytest.approx([0.485, 0.456, 0.406])
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": np.zeros((3, 3, 64, 64), np.float32)})
    assert logits.shape == (3, 12)  # a dynamic batch axis
    assert sorted(p.name for p in out.parent.iterdir()) == ["cats.json", "cats.onnx"]


def test_export_refuses_corrupt_checkpoints_and_writes_nothing(trained, tmp_path):
    run_dir, metrics = trained
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(open(metrics["best_model_path"], "rb").read()[:4096])
    foreign = tmp_path / "foreign.ckpt"
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    for checkpoint in (truncated, foreign, tmp_path / "missing.ckpt"):
        out = tmp_path / "out" / "model.onnx"
        result = cli("cats_model.export", str(checkpoint), "--out", str(out))
        assert result.returncode == 1 and result.stderr.strip().startswith("error: "), result.stderr[-1000:]
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_run_has_pictures_that_match_its_metrics(trained):
    run_dir, metrics = trained
    plots = metrics["plots"]
    assert set(plots) == {"confusion_matrix", "per_class_accuracy", "training_curves"}
    for key in ("confusion_matrix", "training_curves"):
        with Image.open(plots[key]) as image:
            assert image.format == "PNG" and min(image.size) > 300
            assert len(set(image.convert("L").getdata())) > 20  # drawn, not blank
    with open(plots["per_class_accuracy"], newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows] == metrics["classes"]
    for row in rows:
        assert float(row["accuracy"]) == pytest.approx(metrics["per_class_acc"][row["class"]], abs=1e-4)
    assert sum(int(r["support"]) for r in rows) == sum(map(sum, metrics["confusion_matrix"]))
    assert json.loads((run_dir / "metrics.json").read_text())["plots"] == plots


def test_tensorboard_logger_writes_events(tmp_path):
    overrides = ["debug=smoke", "logger=tensorboard", "callbacks.progress_bar=null", "print_config=false"]
    train(compose_train_config(overrides, tmp_path))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_optional_loggers_are_configured_for_their_lightning_class(tmp_path, logger):
    cfg = compose_train_config([f"logger={logger}"], tmp_path)
    node = cfg.logger[logger]
    parameters = inspect.signature(get_class(node._target_).__init__).parameters
    named = {k for k, p in parameters.items() if p.kind != p.VAR_KEYWORD}
    passed_on = {"resume"} if logger == "wandb" else set()  # WandbLogger hands these to wandb.init
    assert set(node) - {"_target_"} <= named | passed_on, list(node)
    try:
        __import__(logger)
    except ModuleNotFoundError:  # not installed here: one clear line instead of a traceback
        result = cli("cats_model.train", "debug=smoke", f"logger={logger}", f"hydra.run.dir={tmp_path}/run")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith("error: the chosen logger needs a package")
