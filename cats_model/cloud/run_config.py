"""A Modal run's training config: composed once, where the user types the run (the entrypoint, `cloud submit`, the
sweep launcher), checked there, and sent to the container as YAML text. Nothing in the container composes it again:
its training process loads the text as its primary config and adds only what the container decides (the run's
folder, its call's deadline); it checks the values as every `python -m cats_model.train` does, there with the GPU
that decides the Trainer's arguments.

Paths stay interpolations in the text (`${paths.data_dir}` and the rest): they resolve in the container, against
its mounts, not against this machine's folders.
"""

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cats_model.cloud.overrides import check_not_fixed, has_key, key, one_run
from cats_model.cloud.settings import Call, Settings
from cats_model.config import SENT_CONFIG_NAME, compose_train_config
from cats_model.errors import UserError
from cats_model.validation import check_values, leaves

# The training process's primary config, in a folder of its own that `--config-dir` puts first on Hydra's search
# path; Hydra's own settings come from configs/hydra, as for `python -m cats_model.train`.
HEADER = {"defaults": [{"hydra": "default"}, "_self_"]}
# Of Hydra's own settings, the training process takes these from where the run was typed (overrides or config files):
# its environment (`hydra.job.env_set`, into which Hydra copies env_copy's variables from this machine), whether it
# changes into its folder, and verbose logging. They cross in the config's `hydra` node; the rest of that node is the
# training process's own (its folder, name, logging), and an override of it is refused.
HYDRA_SETTINGS = ("job.env_set", "job.chdir", "verbose")
# Hydra's settings that serve the composition, here: the config search path, env_copy.
HYDRA_HERE = ("hydra.searchpath", "hydra.job.env_copy")
# `${hydra:...}` reads the Hydra config of the process that resolves it; only the run's folder means the same there.
# (`\${...}` is a literal, not a read.)
HYDRA_READ = re.compile(r"(?<!\\)\$\{\s*hydra\s*:\s*([^}]*?)\s*\}")
SAME_IN_THE_CONTAINER = {"runtime.output_dir"}


def compose_run(overrides: list[str], settings: Settings, **placement) -> tuple[str, Call]:
    """The run's config text and its call (`placement`: a sweep's fields of Call), or a UserError before anything is
    submitted or paid for. The container's trainer and loggers (`container_presets`) are part of the composition
    unless the overrides choose; they follow the call's GPUs, which the composed config decides (`gpu=`, or a
    config file's `gpu:`), so a run that needs them is composed a second time with them, here."""
    check_not_fixed(overrides)
    check_hydra_settings(overrides)
    cfg = compose_train_config(one_run(overrides))
    call = settings.call(cfg.get("gpu"), cfg.get("timeout"), **placement)
    if presets := container_presets(overrides, call):
        cfg = compose_train_config([*presets, *one_run(overrides)])
    sent = sent_config(cfg)
    check_no_hydra_reads(sent)
    check_values(cfg)
    return OmegaConf.to_yaml(sent), call


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


def check_hydra_settings(overrides: list[str]) -> None:
    """An override of Hydra's own settings that the training process would not take is refused in one line."""
    taken = tuple(f"hydra.{name}" for name in HYDRA_SETTINGS)
    for override in one_run(overrides):  # a sweep's settings are the sweep's own
        if has_key(override, ("hydra",)) and not has_key(override, (*taken, *HYDRA_HERE)):
            raise UserError(
                f"{override} is a setting of Hydra's own that a Modal run's training process does not take (it takes "
                f"{', '.join(taken)}, from your overrides or config files): drop it"
            )


def check_no_hydra_reads(sent: DictConfig) -> None:
    """A value that reads Hydra's config (`${hydra:job.override_dirname}`, `${hydra:runtime.choices.model}`) would
    read the training process's, composed from the config sent, not the one composed here: refused in one line."""
    for name, value in leaves(OmegaConf.to_container(sent, resolve=False)):
        if isinstance(value, str) and set(HYDRA_READ.findall(value)) - SAME_IN_THE_CONTAINER:
            raise UserError(
                f"{name}={value} reads Hydra's own config, which differs in a Modal run's container from the one "
                "composed here (only ${hydra:runtime.output_dir}, the run's folder, is the same): give the value "
                "itself"
            )


def sent_config(cfg: DictConfig) -> DictConfig:
    """The composed config, interpolations kept, with the Hydra settings of HYDRA_SETTINGS that it holds."""
    sent = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False) if "hydra" in cfg else {}
    for name in HYDRA_SETTINGS:
        node = hydra
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node not in (None, {}, []):
            OmegaConf.update(sent, f"hydra.{name}", node, force_add=True)
    return sent


def read_config(text: str) -> DictConfig:
    """The config a text of `compose_run` holds, as the container reads it (its paths resolved against its
    mounts when read)."""
    return OmegaConf.create(text)


def write_primary_config(text: str, folder: Path) -> list[str]:
    """Write the text as the training process's primary config into `folder` (one of its own); returns the
    arguments of `python -m cats_model.train` that load it. Lightning's DDP starts its other ranks with the same
    arguments, so the folder lasts as long as the training process."""
    config = OmegaConf.merge(HEADER, read_config(text))
    (folder / f"{SENT_CONFIG_NAME}.yaml").write_text(OmegaConf.to_yaml(config))
    return ["--config-dir", str(folder), "--config-name", SENT_CONFIG_NAME]
