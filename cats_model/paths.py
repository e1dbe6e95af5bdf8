"""Where the project lives, and the OmegaConf resolvers its configs use."""

import sys
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def configured_path(name: str) -> Path:
    """`paths.<name>` of configs/paths/default.yaml as a run resolves it (CATS_MODEL_DATA_DIR included), for
    the commands that run without a composed config: the download, the benchmark."""
    config = OmegaConf.create({"paths": OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")})
    return Path(config.paths[name])


def run_folder(run_name) -> str:
    """`run_name` as the name of its folder under outputs/runs (`${run_folder:${run_name}}` in the hydra config):
    one name, checked before Hydra creates the folder, never a path out of it (`../../elsewhere/x`)."""
    from cats_model.cloud.remote import (  # one rule for run names, locally and on Modal
        RUN_NAME,
        USER_ERROR_EXIT,
    )

    if not RUN_NAME.fullmatch(str(run_name)):
        # Hydra resolves this as it creates the run folder, where an exception would print a traceback.
        print(
            f"error: run_name={str(run_name)[:100]!r} must be one folder name: letters, digits, '.', '_' or '-' "
            "(at most 100)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(USER_ERROR_EXIT)
    return str(run_name)


def register_config_helpers() -> None:
    """The `${project_root:}` resolver (default paths independent of the working directory), and the
    `synthetic_spec` config node, which takes its fields and defaults from SyntheticSpec itself."""
    from hydra.core.config_store import ConfigStore

    from cats_model.data.synthetic import SyntheticSpec

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("run_folder"):
        OmegaConf.register_new_resolver("run_folder", run_folder)
    ConfigStore.instance().store(name="synthetic_spec", node=SyntheticSpec)


register_config_helpers()
