from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

BACKENDS = ("modal", "local")


class ModalLauncher(Launcher):
    # Hydra passes every setting from the config: their defaults are in config.py's ModalLauncherConf alone.
    def __init__(self, *, backend: str, max_parallel: int, detach: bool) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"hydra.launcher.backend={backend} is not one of {', '.join(BACKENDS)}")
        if max_parallel < 1:
            raise ValueError(f"hydra.launcher.max_parallel must be at least 1, got {max_parallel}")
        self.backend = backend
        self.max_parallel = max_parallel
        self.detach = detach
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.summary_rows: list[dict] = []  # every job of every launch() of this sweep

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.modal_launcher import _core  # heavy imports only when a sweep really runs

        return _core.launch(self, job_overrides, initial_job_idx)
