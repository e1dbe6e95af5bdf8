"""Where the project lives, and the OmegaConf resolvers its configs use."""

from pathlib import Path

from omegaconf import OmegaConf

from cats_model.errors import fail
from cats_model.run_layout import RUN_NAME, RUN_NAME_RULE, fresh_run_name

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def configured_path(name: str) -> Path:
    """`paths.<name>` of configs/paths/default.yaml as a run resolves it (CATS_MODEL_DATA_DIR included), for
    the commands that run without a composed config: the download, the benchmark."""
    register_config_helpers()  # again: a caller (a test's Hydra reset) may have cleared OmegaConf's resolvers
    config = OmegaConf.create({"paths": OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")})
    return Path(config.paths[name])


def run_folder(run_name) -> str:
    """`run_name` as the name of its folder under outputs/runs (`${run_folder:${run_name}}` in the hydra config):
    one name, checked before Hydra creates the folder, never a path out of it (`../../elsewhere/x`)."""
    if not RUN_NAME.fullmatch(str(run_name)):
        # Hydra resolves this as it creates the run folder, where an exception would print a traceback.
        fail(f"run_name={str(run_name)[:100]!r} must be one folder name: {RUN_NAME_RULE}")
    return str(run_name)


def register_config_helpers() -> None:
    """The `${project_root:}` resolver (default paths independent of the working directory), `${run_folder:}`
    and `${fresh_run_name:}` (cats_model.run_layout's rule and name for a run's folder), and the
    `synthetic_spec` config node, which takes its fields and defaults from SyntheticSpec itself."""
    from hydra.core.config_store import ConfigStore

    from cats_model.data.synthetic import SyntheticSpec

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("run_folder"):
        OmegaConf.register_new_resolver("run_folder", run_folder)
    if not OmegaConf.has_resolver("fresh_run_name"):
        # Cached, as Hydra's ${now:} is: every read of run_name in one process gives the same name.
        OmegaConf.register_new_resolver("fresh_run_name", fresh_run_name, use_cache=True)
    ConfigStore.instance().store(name="synthetic_spec", node=SyntheticSpec)


register_config_helpers()
