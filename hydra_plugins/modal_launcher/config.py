# No `from __future__ import annotations` here: Hydra loads plugin modules outside sys.modules, and a
# dataclass with string annotations then fails to load.
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class ModalLauncherConf:
    _target_: str = "hydra_plugins.modal_launcher.launcher.ModalLauncher"
    # modal: each job is a call of `train` in launch/modal_app.py (its image, volumes, GPU, retries, resume).
    # local: each job runs in a fresh local process, its payload serialised as for a remote call.
    backend: str = "modal"
    # How many jobs run at once.
    max_parallel: int = 8


ConfigStore.instance().store(
    group="hydra/launcher", name="modal", node=ModalLauncherConf, provider="tiny-cats-model"
)
