"""The callbacks and loggers of a run, built from their config groups (one entry per file of the group)."""

from hydra.utils import instantiate
from omegaconf import DictConfig

from cats_model.errors import UserError


def _instantiate_group(group: DictConfig | None) -> list:
    """Every entry of the group with a `_target_`; entries set to null (`callbacks.x=null`) are left out."""
    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def instantiate_callbacks(group: DictConfig | None) -> list:
    return _instantiate_group(group)


def instantiate_loggers(group: DictConfig | None) -> list:
    """A logger whose package is not installed (W&B, MLflow) is one line, not a traceback."""
    try:
        return _instantiate_group(group)
    except Exception as err:
        missing = err if isinstance(err, ModuleNotFoundError) else err.__cause__
        if isinstance(missing, ModuleNotFoundError):
            raise UserError(
                f"the chosen logger needs a package that is not installed: {missing}; or use logger=csv"
            ) from err
        raise
