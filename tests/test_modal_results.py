"""A Modal user's results on the offline Modal service: fetching a run into ./runs/NAME and using it as the
README says, TensorBoard over the outputs volume, and training on one's own photos put on the data volume."""

import json
import shutil
import subprocess
import time

import pytest
from helpers import APP_FILE, REMOTE_CPU
from modal_service import modal_command

from cats_model.cloud.__main__ import fetch
from cats_model.cloud.calls import ModalCalls
from cats_model.cloud.settings import load_settings
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic


@pytest.fixture(scope="module")
def volume(module_modal_service):
    """The outputs volume holding one finished run, `day`, made by the README's command through Modal's CLI."""
    result = modal_command(module_modal_service, "run", str(APP_FILE), "--", *REMOTE_CPU, "run_name=day")
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
    fetch("day", ModalCalls(modal_app))
    run = tmp_path / "runs" / "day"
    names = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert {"metrics.json", ".hydra/config.yaml", "csv/metrics.csv", "confusion_matrix.png"} <= names
    assert (
        len([n for n in names if n.startswith("checkpoints/best-")]) == 1
        and "checkpoints/last.ckpt" not in names
    )
    assert f"run day: {len(names)} files in {run}/" in capsys.readouterr().out

    data = module_modal_service.volume_path("cats-model-data")  # the synthetic data the run made, committed
    photo = next(data.glob("synthetic-pet-*/images/Bengal_1.jpg"))
    readme = [
        f"python -m cats_model.predict runs/day/checkpoints/best-*.ckpt {photo} --json",
        "python -m cats_model.export runs/day/checkpoints/best-*.ckpt --out cats.onnx",
    ]
    predicted = subprocess.run(readme[0], shell=True, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert str(photo) in predicted.stdout
    exported = subprocess.run(readme[1], shell=True, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "cats.onnx").is_file()

    with pytest.raises(SystemExit) as failed:
        fetch("nosuchrun", ModalCalls(modal_app))
    assert failed.value.code == 1
    assert "run nosuchrun has no metrics.json on the outputs volume" in capsys.readouterr().err


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
        [*overrides, "data=folder", f"data.root={photos}"], "mine", load_settings().call().to_dict()
    )
    assert result["classes"] == ["bengal", "persian", "sphynx"] and result["epoch"] == 1
