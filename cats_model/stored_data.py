"""The dataset a run folder's stored config names, built from it as data.

A run folder someone hands over is data, like the checkpoint in it (loaded weights-only): `instantiate` on its
`.hydra/config.yaml` would call whatever its `_target_` names (`shutil.copyfile`, say). Here only this project's
own data classes can be built from it, with every value checked as a training run checks it.
"""

from pathlib import Path

from omegaconf import OmegaConf

from cats_model.data import datamodule
from cats_model.errors import UserError
from cats_model.validation import check_arguments, check_known, check_ranges

# The data classes a stored config may name, by the `_target_` the configs under configs/data/ write.
DATA_CLASSES = {
    f"{cls.__module__}.{cls.__name__}": cls
    for cls in (datamodule.CatBreedsDataModule, datamodule.CatVsOtherDataModule, datamodule.FolderDataModule)
}


def stored_datamodule(config_file: Path) -> datamodule.ImageDataModule:
    """The data module of `config_file`'s `data` node, nothing prepared or written: a refusal in one line when
    it names anything else, or holds a value a run would refuse."""
    import cats_model.paths  # noqa: F401  (registers the resolvers the config uses)

    hint = "give --calibration DIR and --eval DIR instead"
    try:
        settings = OmegaConf.to_container(OmegaConf.load(config_file).data, resolve=True)
    except Exception as err:
        why = " ".join(str(err).split())[:200]
        raise UserError(f"{config_file}: its data settings cannot be read ({why}): {hint}") from None
    if not isinstance(settings, dict):
        raise UserError(f"{config_file}: its data settings are not a mapping: {hint}")
    target = settings.pop("_target_", None)
    cls = DATA_CLASSES.get(target)
    if cls is None:
        raise UserError(
            f"{config_file} names data._target_={str(target)[:100]!r}, not one of this project's datasets "
            f"({', '.join(sorted(DATA_CLASSES))}): {hint}"
        )
    check_known(settings, cls, "data", cls.__name__)
    check_arguments(cls, settings, "data")
    check_ranges(OmegaConf.create({"data": settings}))
    try:
        return cls(**settings)
    except TypeError as err:  # a key none of the class's __init__s takes (subclasses pass **kwargs on)
        raise UserError(
            f"{config_file}: data holds a setting {cls.__name__} does not take ({err}): {hint}"
        ) from None
