"""A mistyped key in an override (`trainer.max_epoch=3`), said in one line with the closest key, as the
project says it for a key given with `+`, instead of Hydra's seven lines about structs and object types."""

import contextlib
import difflib

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from cats_model.errors import UserError, exit_on_user_error


def explained(err: ConfigCompositionException, cfg: DictConfig) -> UserError | None:
    """The one line for Hydra's "Could not override 'KEY'" when KEY is not in the config; None for others."""
    cause = err.__cause__
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError) or not cause.full_key:
        return None
    key = cause.full_key
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    known = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(name, known, n=1)
    where = f"{parent}." if parent else ""
    if close:
        return UserError(
            f"{key} is not a key of the config (did you mean {where}{close[0]}?): check its spelling"
        )
    return UserError(f"{key} is not a key of the config: check its spelling, or add it with +{key}=...")


@contextlib.contextmanager
def closest_key_named(exit_on_error: bool = False):
    """While composing: Hydra applies the overrides in a static method of its config loader, the one place that
    has both the error and the config, so it is wrapped there (Hydra offers no hook for its composition errors).
    Its own message stays for every other error. `exit_on_error`: under `@hydra.main`, which would add its
    traceback hint to the line, the process ends there as for the project's other mistakes (one line, exit 2)."""
    original = ConfigLoaderImpl._apply_overrides_to_config

    def apply(overrides, cfg):
        try:
            return original(overrides, cfg)
        except ConfigCompositionException as err:
            one_line = explained(err, cfg)
            if one_line is None:
                raise
            with exit_on_user_error() if exit_on_error else contextlib.nullcontext():
                raise one_line from err

    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply)
    try:
        yield
    finally:
        ConfigLoaderImpl._apply_overrides_to_config = staticmethod(original)
