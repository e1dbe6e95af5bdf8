"""Using a trained checkpoint: predictions, ONNX export, the run's pictures, and the loggers."""

import contextlib
import csv
import importlib
import inspect
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import exit_status
from hydra.utils import get_class
from PIL import Image

from cats_model.config import compose_train_config
from cats_model.data.oxford import CAT, OxfordPet
from cats_model.errors import user_error_in
from cats_model.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(learned_run):
    """The shared model of the default synthetic data (tests/conftest.py): its run folder and metrics."""
    return learned_run


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS`, as the run's summary tells a user to type it: kept for one command, the others
    call its main() in this process (run)."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    """The same command with its main() in this process: its exit code and output, without seconds of imports."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = exit_status(lambda: importlib.import_module(module).main(list(args)))
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def test_predict_recognises_held_out_images_at_the_test_accuracy(trained, tmp_path):
    run_dir, metrics = trained
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root)
    held_out = [r for r in dataset.split("test") if r.species == CAT]  # the synthetic set has dogs too
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    result = cli(
        "cats_model.predict",
        metrics["best_model_path"],
        *(str(dataset.image_path(r)) for r in held_out),
        str(broken),
        "--json",
        "--top-k",
        "2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == len(held_out) + 1 and "error" in rows[-1]
    correct = sum(row["predictions"][0]["label"] == record.breed for row, record in zip(rows, held_out))
    assert correct / len(held_out) == pytest.approx(metrics["test/acc"], abs=0.02)
    assert all(
        len(row["predictions"]) == 2 and 0 <= row["predictions"][1]["probability"] <= 1 for row in rows[:-1]
    )

    table = run("cats_model.predict", metrics["best_model_path"], str(dataset.images_dir / "Bengal_30.jpg"))
    assert table.returncode == 0 and "Bengal_30.jpg" in table.stdout


def test_predict_says_which_photos_show_no_cat(trained, tmp_path):
    run_dir, metrics = trained
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root)
    test = dataset.split("test")
    dogs = [str(dataset.image_path(r)) for r in test if r.species != CAT]
    cats = [str(dataset.image_path(r)) for r in test if r.species == CAT]
    rows = predict_json(metrics["best_model_path"], dogs + cats)
    threshold = metrics["cat_threshold"]
    assert all(row["is_cat"] == (row["cat_probability"] >= threshold) for row in rows)
    # the test split's figures of metrics.json, from the checkpoint alone
    rejected = [not row["is_cat"] for row in rows]
    assert np.mean(rejected[: len(dogs)]) == pytest.approx(metrics["test/dog_rejection"], abs=1e-6)
    assert 1 - np.mean(rejected[len(dogs) :]) == pytest.approx(metrics["test/cat_recall"], abs=1e-6)
    dog = next(row for row in rows if not row["is_cat"])
    table = run("cats_model.predict", metrics["best_model_path"], dog["path"], cats[0])
    assert table.returncode == 0
    dog_line, cat_line = table.stdout.splitlines()
    assert dog_line.split() == [dog["path"], "not", "a", "cat", f"(p={dog['cat_probability']:.2f})"]
    assert cat_line.split()[1] == rows[len(dogs)]["predictions"][0]["label"]  # a cat: its breeds


def test_predict_a_folder_and_refuse_a_bad_checkpoint(trained, tmp_path):
    run_dir, metrics = trained
    for i in range(3):
        Image.new("RGB", (50, 40), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
    result = run("cats_model.predict", metrics["best_model_path"], str(tmp_path), "--json")
    assert [r["path"].rsplit("/", 1)[1] for r in json.loads(result.stdout)] == ["0.png", "1.png", "2.png"]
    missing = run("cats_model.predict", str(tmp_path / "none.ckpt"), str(tmp_path))
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == f"error: no checkpoint at {tmp_path / 'none.ckpt'}"
    )


class _Payload:
    """Unpickling this would run a command: a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_or_foreign_file_as_checkpoint_runs_nothing_and_is_one_line(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, crafted)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(photo)
    for checkpoint in (crafted, photo):  # a photo given where the checkpoint goes, as users do
        result = run("cats_model.predict", str(checkpoint), str(photo))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(
            f"error: {checkpoint} is not a usable tiny-cats-model checkpoint (not a"
        )
        assert "weights_only" not in result.stderr  # torch's advice to load without it is not passed on
    assert not marker.exists()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The shared model exported to ONNX (fp32) by the export command, alone in its folder with its sidecar:
    read it, never change it (copy it first)."""
    out = tmp_path_factory.mktemp("export") / "cats.onnx"
    result = run("cats_model.export", trained[1]["best_model_path"], "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture
def fp32_exported_once(trained, exported, monkeypatch):
    """For the tests of what follows the fp32 export (int8 and its guard, the inference bench): the shared
    checkpoint's fp32 export is the one `exported` made and checked, copied where the command would export it
    again; any other checkpoint is exported as usual. About 5 s of the dynamo exporter per command saved."""
    from cats_model import export
    from cats_model.bench import inference

    export_again = export.export_fp32
    best = Path(trained[1]["best_model_path"])
    exported_opset = inspect.signature(export.export).parameters["opset"].default  # the command's default
    sidecar = json.loads(exported.with_suffix(".json").read_text())

    def export_fp32(model, target: Path, opset: int) -> dict:
        if Path(model.path) != best or opset != exported_opset:
            return export_again(model, target, opset)
        shutil.copyfile(exported, target)
        return {key: sidecar[key] for key in ("max_abs_logit_diff", "max_abs_logit")}

    monkeypatch.setattr(export, "export_fp32", export_fp32)
    monkeypatch.setattr(inference, "export_fp32", export_fp32)


def test_export_writes_onnx_that_matches_pytorch(trained, exported):
    import onnxruntime

    run_dir, metrics = trained
    out = exported
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["class_names"] == metrics["classes"] and sidecar["image_size"] == 64
    assert sidecar["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert sidecar["cat_threshold"] == metrics["cat_threshold"]  # the threshold chosen on validation
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "cat_logit"]  # both answers, named
    logits, cat_logit = session.run(None, {"image": np.zeros((3, 3, 64, 64), np.float32)})
    assert logits.shape == (3, 12) and cat_logit.shape == (3,)  # a dynamic batch axis
    assert sorted(p.name for p in out.parent.iterdir()) == ["cats.json", "cats.onnx"]


def test_export_allows_float_rounding_in_proportion_to_the_logits_and_refuses_more(
    trained, tmp_path, monkeypatch
):
    import onnxruntime
    import torch

    run_dir, metrics = trained
    state = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=True)
    head = [key for key in state["state_dict"] if key.startswith("net.classifier.3.")]  # the last layer
    for key in head:  # scaled: logits in the thousands, as confident models reach (the cat logit's too)
        state["state_dict"][key] *= 1000
    confident = tmp_path / "confident.ckpt"
    torch.save(state, confident)
    out = tmp_path / "confident.onnx"
    assert run("cats_model.export", str(confident), "--out", str(out)).returncode == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["max_abs_logit"] > 1000
    assert sidecar["max_abs_logit_diff"] <= 1e-4 * sidecar["max_abs_logit"]

    # An ONNX model that is off by 0.1% of its logits is refused, and nothing written. Its graph is the one just
    # exported, copied (the exporter is what takes seconds): what runs again is the parity check.
    monkeypatch.setattr(torch.onnx, "export", lambda module, args, f, **options: shutil.copyfile(out, f))
    original = onnxruntime.InferenceSession.run
    monkeypatch.setattr(
        onnxruntime.InferenceSession, "run", lambda *a, **k: [x * 1.001 for x in original(*a, **k)]
    )
    refused = tmp_path / "refused.onnx"
    result = run("cats_model.export", str(confident), "--out", str(refused))
    assert result.returncode == 2 and result.stderr.startswith(
        "error: ONNX parity check failed: logits differ"
    )
    assert not refused.exists() and not refused.with_suffix(".json").exists()


def test_export_refuses_corrupt_checkpoints_and_writes_nothing(trained, tmp_path):
    run_dir, metrics = trained
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(open(metrics["best_model_path"], "rb").read()[:4096])
    foreign = tmp_path / "foreign.ckpt"
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    for checkpoint in (truncated, foreign, tmp_path / "missing.ckpt"):
        out = tmp_path / "out" / "model.onnx"
        result = run("cats_model.export", str(checkpoint), "--out", str(out))
        assert result.returncode == 2 and result.stderr.strip().startswith("error: "), result.stderr[-1000:]
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


def test_tensorboard_logger_writes_events(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cats_model.plots")
    overrides = ["debug=smoke", "logger=tensorboard", "callbacks.progress_bar=null", "print_config=false"]
    metrics = train(compose_train_config(overrides, tmp_path))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # The training curves come from the CSV logger's file: without one, the log says why there are none.
    assert "training_curves" not in metrics["plots"] and "confusion_matrix" in metrics["plots"]
    assert (
        "no training curves: they are drawn from the CSV log, and this run has no CSV logger" in caplog.text
    )


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
        cfg = compose_train_config(
            ["debug=smoke", f"logger={logger}", "print_config=false"], tmp_path / "run"
        )
        with pytest.raises(Exception) as raised:
            train(cfg)
        line = str(user_error_in(raised.value))  # what the training command prints after "error: ", exit 2
        assert line.startswith("the chosen logger needs a package") and "\n" not in line, line


def held_out_cats(tmp_path) -> list[str]:
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root)
    return [str(dataset.image_path(r)) for r in dataset.split("test") if r.species == CAT]


def held_out_dogs(tmp_path) -> list[str]:
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root)
    return [str(dataset.image_path(r)) for r in dataset.split("test") if r.species != CAT]


def predict_json(model, images) -> list[dict]:
    result = run("cats_model.predict", str(model), *images, "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_predict_on_onnx_fp32_and_int8_gives_the_checkpoints_rows(
    trained, exported, fp32_exported_once, tmp_path
):
    run_dir, metrics = trained
    fp32, int8 = exported, tmp_path / "cats-int8.onnx"
    # int8: calibrated on the run's own training split
    result = run("cats_model.export", metrics["best_model_path"], "--out", str(int8), "--int8")
    assert result.returncode == 0, result.stderr[-2000:]
    images = held_out_cats(tmp_path)
    reference = predict_json(metrics["best_model_path"], images)
    for row, same in zip(reference, predict_json(fp32, images)):
        assert [p["label"] for p in same["predictions"]] == [p["label"] for p in row["predictions"]]
        assert [p["probability"] for p in same["predictions"]] == pytest.approx(
            [p["probability"] for p in row["predictions"]], abs=1e-4
        )
    quantized = predict_json(int8, images)
    agreement = np.mean(
        [a["predictions"][0]["label"] == b["predictions"][0]["label"] for a, b in zip(reference, quantized)]
    )
    sidecar = json.loads(int8.with_suffix(".json").read_text())
    guard = sidecar["int8"]
    assert agreement >= guard["min_agreement"] == 0.98
    # The cat-or-not answer, on cats and dogs: the same from the fp32 export, nearly always from the int8 one.
    both = images + held_out_dogs(tmp_path)
    answers = {kind: predict_json(model, both) for kind, model in
               (("checkpoint", metrics["best_model_path"]), ("fp32", fp32), ("int8", int8))}  # fmt: skip
    for row, same in zip(answers["checkpoint"], answers["fp32"]):
        assert same["is_cat"] == row["is_cat"]
        assert same["cat_probability"] == pytest.approx(row["cat_probability"], abs=1e-4)
    assert (
        np.mean([a["is_cat"] == b["is_cat"] for a, b in zip(answers["checkpoint"], answers["int8"])]) >= 0.98
    )
    assert (
        guard["cat_agreement"] >= 0.98 and guard["cat_images"] == 60
    )  # the validation split's cats and dogs
    root = compose_train_config(["data=synthetic"], tmp_path).data.root
    assert guard["calibration"] == {"source": f"the training split of {root}", "images": 300}
    assert guard["eval"] == {"source": f"the validation split of {root}", "images": 48}
    assert guard["agreement"] >= 0.98 and guard["accuracy_fp32"] - guard["accuracy_int8"] <= 0.01
    assert guard["int8_bytes"] == int8.stat().st_size == sidecar["bytes"] < guard["fp32_bytes"] / 3
    assert guard["fp32_bytes"] == fp32.stat().st_size


def test_int8_that_fails_the_guard_is_refused_and_nothing_written(trained, fp32_exported_once, tmp_path):
    run_dir, metrics = trained
    black = tmp_path / "black"  # calibrated on the wrong images: activation ranges that fit no real photo
    black.mkdir()
    for i in range(8):
        Image.new("RGB", (80, 80)).save(black / f"{i}.png")
    out = tmp_path / "out" / "cats.onnx"
    result = run(
        "cats_model.export",
        metrics["best_model_path"],
        "--out",
        str(out),
        "--int8",
        "--calibration",
        str(black),
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: int8 model refused, nothing written: top-1 agreement with fp32 0.")
    assert "(--min-agreement 0.98)" in line and "on 48 images of the validation split of" in line
    assert ", cat-or-not agreement " in line and line.endswith(" on 60 images")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_int8_that_answers_cat_or_not_differently_is_refused(
    trained, fp32_exported_once, tmp_path, monkeypatch
):
    from cats_model.inference import OnnxModel

    run_dir, metrics = trained
    original = OnnxModel.answers

    def int8_flips_cat_or_not(self, images):  # the breeds as they are, P(cat) turned around
        breeds, cat = original(self, images)
        return breeds, (1 - cat if self.path.name.startswith("int8") else cat)

    monkeypatch.setattr(OnnxModel, "answers", int8_flips_cat_or_not)
    out = tmp_path / "cats.onnx"
    result = run("cats_model.export", metrics["best_model_path"], "--out", str(out), "--int8")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: int8 model refused, nothing written: top-1 agreement with fp32 ")
    breeds, cat = re.search(
        r"agreement with fp32 ([\d.]+) .*cat-or-not agreement ([\d.]+) on 60", line
    ).groups()
    assert float(breeds) >= 0.98 > float(cat)  # refused for the cat-or-not answer alone
    assert not out.exists()


def test_export_refuses_what_it_cannot_write_or_calibrate_in_one_line(trained, tmp_path):
    run_dir, metrics = trained
    (tmp_path / "folder.onnx").mkdir()
    empty, elsewhere = tmp_path / "empty", tmp_path / "elsewhere"
    empty.mkdir()
    elsewhere.mkdir()
    lone = elsewhere / "model.ckpt"  # a checkpoint outside its run folder: its dataset is unknown
    lone.write_bytes(open(metrics["best_model_path"], "rb").read())
    (tmp_path / "eval" / "Tabby").mkdir(parents=True)
    (tmp_path / "existing_dir").mkdir()
    model = tmp_path / "x.onnx"
    cases = [
        ([tmp_path / "folder.onnx"], "a folder is in the way"),
        ([tmp_path / "existing_dir"], "name a .onnx file"),
        ([model, "--int8", "--calibration", empty], "no images to calibrate on in "),
        ([model, "--int8", "--eval", tmp_path / "eval"], "Tabby are not classes of this model"),
        ([model, "--int8", "--min-agreement", "98"], "--min-agreement is a fraction from 0 to 1"),
    ]
    for args, expected in cases:
        result = run("cats_model.export", metrics["best_model_path"], "--out", *map(str, args))
        assert result.returncode == 2 and expected in result.stderr, (args, result.stderr[-1000:])
        assert len(result.stderr.strip().splitlines()) == 1
    lone_result = run("cats_model.export", str(lone), "--out", str(tmp_path / "x.onnx"), "--int8")
    assert lone_result.returncode == 2 and "give --calibration DIR and --eval DIR" in lone_result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere",
        "empty",
        "eval",
        "existing_dir",
        "folder.onnx",
    ]


def test_a_checkpoint_from_before_the_cat_head_predicts_and_exports_as_before(trained, tmp_path):
    import onnxruntime
    import torch

    run_dir, metrics = trained
    checkpoint = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=True)
    for key in ("cat_head", "max_false_reject", "cat_threshold"):  # hyper-parameters it did not have then
        del checkpoint["hyper_parameters"][key]
    for key in [k for k in checkpoint["state_dict"] if k.startswith("net.classifier.3.")]:
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:12]  # one output per breed
    older = tmp_path / "run" / "checkpoints" / "older.ckpt"
    older.parent.mkdir(parents=True)
    torch.save(checkpoint, older)
    dog = held_out_dogs(tmp_path)[0]
    rows = predict_json(older, [dog])
    assert set(rows[0]) == {"path", "predictions"}  # breeds only, as before, even for a dog
    table = run("cats_model.predict", str(older), dog)
    assert table.stdout.split()[1] == rows[0]["predictions"][0]["label"]
    out = tmp_path / "older.onnx"
    assert run("cats_model.export", str(older), "--out", str(out)).returncode == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert json.loads(out.with_suffix(".json").read_text())["cat_threshold"] is None
    assert set(predict_json(out, [dog])[0]) == {"path", "predictions"}


def test_wrong_predict_arguments_are_one_line_each(trained):
    checkpoint = trained[1]["best_model_path"]
    for args, expected in (
        (["--top-k", "0"], "error: top-k must be a whole number of 1 or more, got 0"),
        (["--top-k", "-1"], "error: top-k must be a whole number of 1 or more, got -1"),
        (["--batch-size", "0"], "error: --batch-size must be 1 or more, got 0"),
        (
            ["--device", "nonsense"],
            "error: --device 'nonsense' is not a device: use auto, cpu, cuda or cuda:N",
        ),
        (["--device", "cuda:7"], "error: --device cuda:7: no such CUDA GPU is visible here; use cpu or auto"),
    ):
        result = run("cats_model.predict", checkpoint, "photo.jpg", *args)
        assert (result.returncode, result.stdout, result.stderr.strip()) == (2, "", expected)


def crafted(checkpoint, tmp_path, **hyper_parameters):
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"].update(hyper_parameters)
    path = tmp_path / f"crafted-{len(list(tmp_path.glob('crafted-*')))}.ckpt"
    torch.save(state, path)
    return str(path)


def test_crafted_hyper_parameters_are_refused_and_names_escaped(trained, tmp_path):
    run_dir, metrics = trained
    photo = str(
        OxfordPet(compose_train_config(["data=synthetic"], tmp_path).data.root).images_dir / "Bengal_30.jpg"
    )
    for values, expected in (
        ({"image_size": -5}, "holds image_size=-5 (expected an integer in [32, 2048])"),
        ({"image_size": 200000}, "holds image_size=200000 (expected an integer in [32, 2048])"),
        ({"mean": [0.5, float("nan"), 0.5]}, "holds mean=[0.5, nan, 0.5]"),
        ({"std": [0.0, 0.2, 0.2]}, "holds std=[0.0, 0.2, 0.2]"),
    ):
        result = run("cats_model.predict", crafted(metrics["best_model_path"], tmp_path, **values), photo)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert expected in line and "not a model this project wrote" in line

    names = [f"\x1b[31mred{i}\x1b[0m\a" for i in range(12)]  # colour codes and a bell in every class name
    checkpoint = crafted(metrics["best_model_path"], tmp_path, class_names=names)
    table = run("cats_model.predict", checkpoint, photo, "--top-k", "1").stdout
    assert table and "\x1b" not in table and "\a" not in table
    assert "\\x1b[31mred" in table and "\\x1b[0m\\x07" in table
    rows = run("cats_model.predict", checkpoint, photo, "--json").stdout
    assert json.loads(rows)[0]["predictions"][0]["label"] in names and "\x1b" not in rows


def test_an_onnx_without_its_own_sidecar_is_refused(exported, tmp_path):
    first, second = tmp_path / "a" / "cats.onnx", tmp_path / "b" / "cats.onnx"
    shutil.copytree(exported.parent, first.parent)
    photo = held_out_cats(tmp_path)[0]
    assert run("cats_model.predict", str(first), photo).returncode == 0
    second.parent.mkdir()
    second.write_bytes(first.read_bytes() + b"\0")  # another model, beside the sidecar of the first
    first.with_suffix(".json").replace(second.with_suffix(".json"))
    assert run("cats_model.predict", str(first), photo).stderr.strip() == (
        f"error: {first} has no sidecar cats.json (class names, image size, normalisation): "
        "export it with `python -m cats_model.export`, which writes both"
    )
    assert run("cats_model.predict", str(second), photo).stderr.strip() == (
        f"error: {second.with_suffix('.json')} does not describe {second} (its sha256 differs): export the two again"
    )


def test_inference_bench_compares_pytorch_and_onnx_side_by_side(trained, fp32_exported_once, tmp_path):
    run_dir, metrics = trained
    out = tmp_path / "bench.json"
    result = run(
        "cats_model.bench.cli",
        "inference",
        metrics["best_model_path"],
        "--rounds",
        "1",
        "--latency-runs",
        "3",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    variants = report["variants"]
    assert list(variants) == ["pytorch eager fp32", "pytorch channels_last fp32", "onnx fp32", "onnx int8"]
    assert report["threads"] == 1 and report["eval"]["images"] == 48
    for name, row in variants.items():
        assert row["images_per_sec"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"], name
        assert row["accuracy"] == pytest.approx(variants["pytorch eager fp32"]["accuracy"], abs=0.05)
    assert variants["onnx fp32"]["agreement"] == variants["pytorch channels_last fp32"]["agreement"] == 1.0
    assert variants["onnx int8"]["bytes"] < variants["onnx fp32"]["bytes"] / 3
    assert variants["pytorch eager fp32"]["speedup"] == 1.0
    assert "| onnx int8 |" in result.stdout and "on 1 thread each" in result.stdout
    # the cat-or-not answer, carried by every variant, over the validation split's cats and dogs
    assert report["eval"]["cat_or_not_images"] == 60 and "| cat-or-not agreement |" in result.stdout
    assert (
        variants["onnx fp32"]["cat_agreement"]
        == variants["pytorch channels_last fp32"]["cat_agreement"]
        == 1.0
    )
    assert variants["onnx int8"]["cat_agreement"] >= 0.98
