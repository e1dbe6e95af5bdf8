"""A Modal user's results on the offline Modal service: fetching a run into ./runs/NAME and using it as the
README says, TensorBoard over the outputs volume, and training on one's own photos put on the data volume."""

import glob
import json
import shutil
import time

import pytest
from helpers import APP_FILE, REMOTE_CPU, modal_run, run_module_in_process
from modal_service import client_process, modal_in_process

from cats_model.cloud.__main__ import fetch
from cats_model.cloud.outputs import opened
from cats_model.cloud.settings import load_settings
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.errors import UserError


@pytest.fixture(scope="module")
def volume(module_modal_service):
    """The outputs volume holding one finished run, `day`, made by the README's command through Modal's CLI."""
    result = modal_in_process(module_modal_service, "run", str(APP_FILE), "--", *REMOTE_CPU, "run_name=day")
    assert result.returncode == 0, result.stderr[-3000:]
    [call] = module_modal_service.calls_of("train")
    assert call.function.option("resources").gpu_config.gpu_type == load_settings().train["gpu"]
    assert "  python -m cats_model.cloud fetch day" in result.stdout
    return module_modal_service.volume_path("cats-model-outputs")


@pytest.fixture
def volume_client(volume, module_modal_service, monkeypatch):
    """This process's modal client pointed at the module's service."""
    import modal.client

    for key, value in module_modal_service.env().items():
        monkeypatch.setenv(key, value)
    modal.client._Client._set_env_client(None)
    yield volume
    modal.client._Client._set_env_client(None)


@pytest.mark.slow
def test_fetch_brings_a_run_into_runs_and_the_readme_commands_use_it(
    volume_client, modal_app, monkeypatch, tmp_path, module_modal_service, capsys
):
    monkeypatch.chdir(tmp_path)
    with opened() as outputs_volume:
        fetch("day", outputs_volume)
    run = tmp_path / "runs" / "day"
    names = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert {"metrics.json", ".hydra/config.yaml", "csv/metrics.csv", "confusion_matrix.png"} <= names
    assert (
        len([n for n in names if n.startswith("checkpoints/best-")]) == 1
        and "checkpoints/last.ckpt" not in names
    )
    assert f"run day: {len(names)} files in {run}/" in capsys.readouterr().out

    data = module_modal_service.volume_path("cats-model-data")  # the synthetic data the run trained on
    photo = next(data.glob("synthetic-pet-*/images/Bengal_1.jpg"))
    # The README's commands, run in this process (their words are what is tested here): the shell's glob, then
    # `python -m` of each.
    [best] = glob.glob("runs/day/checkpoints/best-*.ckpt")
    predicted = run_module_in_process("cats_model.predict", best, str(photo), "--json")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert str(photo) in predicted.stdout
    exported = run_module_in_process("cats_model.export", best, "--out", "cats.onnx")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "cats.onnx").is_file()

    with pytest.raises(UserError, match="run nosuchrun has no metrics.json on the outputs volume"):
        with opened() as outputs_volume:
            fetch("nosuchrun", outputs_volume)


def test_fetch_and_summary_read_the_volume_from_this_machine_with_no_container(modal_client, tmp_path):
    """The README's commands, on a volume holding a finished run of sweep `grid` and a failed one."""
    runs = modal_client.volume_path("cats-model-outputs") / "runs"
    day = runs / "grid-0"
    for path, text in {
        "metrics.json": json.dumps({
            "best_model_path": "/outputs/runs/grid-0/checkpoints/best-epoch001.ckpt", "val/acc_best": 0.75,
            "test/acc": 0.5, "plots": {"confusion": "/outputs/runs/grid-0/confusion_matrix.png"},
        }),
        "launch.json": json.dumps({"status": "completed", "overrides": ["lr=0.1"], "gpu": "T4", "container_s": 600}),
        ".hydra/config.yaml": "seed: 1\n", "csv/metrics.csv": "epoch\n1\n", "confusion_matrix.png": "png",
        "checkpoints/best-epoch001.ckpt": "best", "checkpoints/last.ckpt": "last",
    }.items():  # fmt: skip
        (day / path).parent.mkdir(parents=True, exist_ok=True)
        (day / path).write_text(text)
    failed = {"status": "failed", "overrides": ["lr=9"], "gpu": "T4", "container_s": 30, "error": "bad lr"}
    (runs / "grid-1").mkdir()
    (runs / "grid-1" / "launch.json").write_text(json.dumps(failed))

    fetched = client_process(
        modal_client, "-m", "cats_model.cloud", "fetch", "grid-0", "--into", str(tmp_path)
    )
    assert fetched.returncode == 0, fetched.stderr
    names = sorted(
        str(p.relative_to(tmp_path / "grid-0")) for p in (tmp_path / "grid-0").rglob("*") if p.is_file()
    )
    assert names == [
        ".hydra/config.yaml", "checkpoints/best-epoch001.ckpt", "confusion_matrix.png", "csv/metrics.csv",
        "metrics.json",
    ]  # fmt: skip
    table = client_process(modal_client, "-m", "cats_model.cloud", "summary", "grid")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:4] == ["*0", "lr=0.1", "completed", "0.7500"]
    assert lines[2].split()[:3] == ["1", "lr=9", "failed"] and "job 1 failed: bad lr" in lines
    missing = client_process(modal_client, "-m", "cats_model.cloud", "fetch", "grid-1")
    assert (missing.returncode, missing.stderr) == (
        2,
        "error: run grid-1 has no metrics.json on the outputs volume (unknown, running or failed)\n",
    )
    # Read through the Volume API: no app was started, no container ran, no image was built.
    assert modal_client.containers == [] and not {"AppCreate", "ImageGetOrCreate"} & set(
        modal_client.requests
    )
    assert modal_client.unanswered == [] and modal_client.faults == []


def test_summary_before_any_run_is_one_line(modal_client):
    fresh = client_process(modal_client, "-m", "cats_model.cloud", "summary", "grid")
    assert (fresh.returncode, fresh.stderr) == (
        2, "error: the outputs volume cats-model-outputs does not exist yet: no run has been started on Modal\n"
    )  # fmt: skip


@pytest.mark.slow
def test_tensorboard_serves_every_run_on_the_outputs_volume(
    volume, modal_app, monkeypatch, stops_its_children
):
    from werkzeug.test import Client

    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(volume))
    client = Client(modal_app.tensorboard.local())
    assert client.get("/").status_code == 200
    for _ in range(100):  # TensorBoard reads the event files in the background
        runs = json.loads(client.get("/data/runs").get_data())
        if runs:
            break
        time.sleep(0.1)
    assert runs == ["day/tensorboard"]


@pytest.mark.slow
def test_own_photos_on_the_data_volume_train_with_data_folder(modal_app, data_dir, tmp_path, monkeypatch):
    # `modal volume put cats-model-data ./my_photos /my_photos` puts the tree at <data mount>/my_photos.
    photos = data_dir / "my_photos"
    synthetic = (
        ensure_synthetic(tmp_path / "pets", SyntheticSpec(trainval_per_class=6, dog_breeds=0)) / "images"
    )
    for breed in ("Bengal", "Persian", "Sphynx"):
        (photos / breed.lower()).mkdir(parents=True, exist_ok=True)
        for image in sorted(synthetic.glob(f"{breed}_*.jpg")):
            shutil.copy(image, photos / breed.lower())
    monkeypatch.setenv("CATS_MODEL_OUTPUT_DIR", str(tmp_path / "outputs"))
    overrides = [o for o in REMOTE_CPU if not o.startswith(("data=", "data.synthetic"))]
    result = modal_app.train.local(
        *modal_run([*overrides, "data=folder", f"data.root={photos}"]),
        "mine",
        load_settings().call().to_dict(),
    )
    assert result["classes"] == ["bengal", "persian", "sphynx"] and result["epoch"] == 1
