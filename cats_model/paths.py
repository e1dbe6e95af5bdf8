"""Where the project lives, and the OmegaConf resolvers its configs use."""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def configured_path(name: str) -> Path:
    """`paths.<name>` of configs/paths/default.yaml as a run resolves it (CATS_MODEL_DATA_DIR included), for
    the commands that run without a composed config: the download, the benchmark."""
    config = OmegaConf.create({"paths": OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")})
    return Path(config.paths[name])


def register_config_helpers() -> None:
    """The `${project_root:}` resolver (default paths independent of the working directory), and the
    `synthetic_spec` config node, which takes its fields and defaults from SyntheticSpec itself."""
    from hydra.core.config_store import ConfigStore

    from cats_model.data.synthetic import SyntheticSpec

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    ConfigStore.instance().store(name="synthetic_spec", node=SyntheticSpec)


register_config_helpers()
