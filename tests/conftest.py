import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cats_model.paths import CONFIG_DIR, PROJECT_ROOT

# Tiny synthetic runs: a few images per class at 32 px, one CPU process.
FAST = [
    "data=synthetic",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.synthetic.trainval_per_class=6",
    "data.synthetic.test_per_class=2",
    "data.synthetic.dog_breeds=2",
    "model=mobilenet_v3_small",
    "model.pretrained=false",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


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


def compose_train_config(overrides: list[str], run_dir: Path) -> DictConfig:
    """Compose configs/train.yaml as `python -m cats_model.train` would, with `run_dir` as the run directory."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra.run.dir={run_dir}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
