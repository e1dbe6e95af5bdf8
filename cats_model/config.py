"""Composing configs/train.yaml outside `@hydra.main`: for tests, the Modal entrypoint and the sweep launcher."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict

from cats_model.errors import UserError
from cats_model.override_typos import closest_key_named
from cats_model.paths import CONFIG_DIR

# The name under which a training process loads a config composed elsewhere (a Modal run's, sent as text by
# cats_model.cloud.run_config) instead of configs/train.yaml.
SENT_CONFIG_NAME = "modal_run"


def compose_train_config(overrides: list[str], run_dir: str | Path | None = None) -> DictConfig:
    """Compose the config as `python -m cats_model.train OVERRIDES` would; with `run_dir`, ready to train."""
    GlobalHydra.instance().clear()
    extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"), closest_key_named():
            cfg = compose("train", overrides=[*overrides, *extra], return_hydra_config=True)
    except (HydraException, ValueError) as err:
        raise UserError(" ".join(str(err).split())) from err
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
    return cfg
