# No `from __future__ import annotations` here: Hydra loads plugin modules outside sys.modules, and a
# dataclass with string annotations then fails to load.
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class ModalLauncherConf:
    _target_: str = "hydra_plugins.modal_launcher.launcher.ModalLauncher"
    # modal: each job is a call of `train` in launch/modal_app.py (its image, volumes, GPU, retries, resume).
    # local: the same function bodies in fresh local processes, the volumes standing for the local data and
    # outputs folders: a sweep without a Modal account.
    backend: str = "modal"
    # How many jobs run at once (on Modal: max_containers of the jobs' calls).
    max_parallel: int = 8
    # Started from `python -m cats_model.train -m`: the app stays after this process ends, and so do the jobs
    # it submitted (what `modal run --detach` does for `modal run launch/modal_app.py -- -m ...`).
    detach: bool = False


ConfigStore.instance().store(
    group="hydra/launcher", name="modal", node=ModalLauncherConf, provider="tiny-cats-model"
)
