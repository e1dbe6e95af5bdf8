import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> Path:
    """Every test reads and writes data under one temporary directory, never the checkout's data/."""
    path = tmp_path_factory.mktemp("data")
    previous = os.environ.get("CATS_MODEL_DATA_DIR")
    os.environ["CATS_MODEL_DATA_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CATS_MODEL_DATA_DIR", None)
    else:
        os.environ["CATS_MODEL_DATA_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def torch_threads():
    """Loading a model for inference sets PyTorch's process-wide thread count: each module gets it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated_hydra(hydra_restore_singletons):
    """Hydra's global state (version base, config store, resolvers) is restored after every test."""
    yield


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    """(run folder, metrics) of a model that has learned the default synthetic data, breeds and cat-or-not (about
    15 s on 2 cores), trained by the CLI so that its run folder is what a user has (.hydra/config.yaml names its
    dataset). Shared by the modules that use a trained model: read it, never change it."""
    run_dir = tmp_path_factory.mktemp("trained")
    result = subprocess.run(
        [sys.executable, "-m", "cats_model.train", "data=synthetic", "data.num_workers=0", "model=mobilenet_v3_small",
         "model.pretrained=false", "trainer=cpu", "callbacks.progress_bar=null", "print_config=false",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def modal_app():
    """launch/modal_app.py, imported as Modal's CLI would (no Modal token needed)."""
    from cats_model.cloud.calls import load_modal_app

    return load_modal_app()


@pytest.fixture
def offline(monkeypatch):
    """Modal's network end replaced (tests/modal_offline.py): calls run their function bodies via .local()."""
    from modal_offline import OfflineModal

    return OfflineModal().install(monkeypatch.setattr)
