"""A Modal run's training config: composed once, where the user types the run (the entrypoint, `cloud submit`, the
sweep launcher), checked there, and sent to the container as YAML text. Nothing in the container composes it again:
its training process loads the text as its primary config and adds only what the container decides (the run's
folder, its call's deadline); it checks the values as every `python -m cats_model.train` does, there with the GPU
that decides the Trainer's arguments.

Paths stay interpolations in the text (`${paths.data_dir}` and the rest): they resolve in the container, against
its mounts, not against this machine's folders.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cats_model.cloud.overrides import check_not_fixed, has_key, key, one_run
from cats_model.cloud.settings import Call, Settings
from cats_model.config import compose_train_config
from cats_model.validation import check_values

# The training process's primary config, in a folder of its own that `--config-dir` puts first on Hydra's search
# path; Hydra's own settings come from configs/hydra, as for `python -m cats_model.train`.
CONFIG_NAME = "modal_run"
HEADER = {"defaults": [{"hydra": "default"}, "_self_"]}
# Hydra's own settings typed with the run (`hydra.verbose=true`, `hydra/job_logging=disabled`): no part of the
# training config, so they reach the training process as typed.
HYDRA_KEYS = ("hydra",)


def compose_run(overrides: list[str], settings: Settings, **placement) -> tuple[str, Call]:
    """The run's config text and its call (`placement`: a sweep's fields of Call), or a UserError before anything is
    submitted or paid for. The container's trainer and loggers (`container_presets`) are part of the composition
    unless the overrides choose; they follow the call's GPUs, which the composed config decides (`gpu=`, or a
    config file's `gpu:`), so a run that needs them is composed a second time with them, here."""
    check_not_fixed(overrides)
    cfg = compose_train_config(one_run(overrides))
    call = settings.call(cfg.get("gpu"), cfg.get("timeout"), **placement)
    if presets := container_presets(overrides, call):
        cfg = compose_train_config([*presets, *one_run(overrides)])
    check_values(cfg)
    return config_text(cfg), call


def container_presets(overrides: list[str], call: Call) -> list[str]:
    """What a Modal container trains with unless the overrides choose: its GPUs (DDP over several), and TensorBoard
    beside the CSV log (TensorBoard over the outputs volume shows every run)."""
    chosen = {key(o) for o in overrides}
    presets = []
    if "trainer" not in chosen:
        presets.append(f"trainer={'ddp' if call.gpu_count > 1 else 'gpu'}")
    if "logger" not in chosen:
        presets.append("logger=[csv,tensorboard]")
    return presets


def config_text(cfg: DictConfig) -> str:
    """The composed config without Hydra's own node (the training process has its own), interpolations kept."""
    return OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def read_config(text: str) -> DictConfig:
    """The config a text of `config_text` holds, as the container reads it (its paths resolved against its
    mounts when read)."""
    return OmegaConf.create(text)


def write_primary_config(text: str, folder: Path) -> list[str]:
    """Write the text as the training process's primary config into `folder` (one of its own); returns the
    arguments of `python -m cats_model.train` that load it. Lightning's DDP starts its other ranks with the same
    arguments, so the folder lasts as long as the training process."""
    config = OmegaConf.merge(HEADER, read_config(text))
    (folder / f"{CONFIG_NAME}.yaml").write_text(OmegaConf.to_yaml(config))
    return ["--config-dir", str(folder), "--config-name", CONFIG_NAME]


def hydra_settings(overrides: list[str]) -> list[str]:
    """The overrides of Hydra's own settings (validated where the run was composed), as typed."""
    return [o for o in one_run(overrides) if has_key(o, HYDRA_KEYS) and key(o) != "hydra.mode"]
