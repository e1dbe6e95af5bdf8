"""What a run's data needs on the data volume before it starts, and what `prepare_data` has already made there.

`prepare_data` records each data setting it prepared in the dataset's own cache folder, naming the decoded-image
cache it built. A later `modal run` on data already prepared then skips building the data module in its
prepare_data container: no torch or Lightning import, no listing of every image. Recorded only where the config
fixes the files: Oxford-IIIT Pet at its own folder (verified on download) and the synthetic stand-in, without a
folder of `negatives` (one's own photos may change between runs, and the data module finds out). A record counts
only while its cache files are there; removing the dataset removes its records.
"""

import hashlib
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from cats_model.atomic import atomic_write_text
from cats_model.data import CACHE_DIR

OXFORD_DATAMODULES = ("CatBreedsDataModule", "CatVsOtherDataModule")


def needs_oxford_download(cfg) -> bool:
    """Whether a composed config reads Oxford-IIIT Pet from the data volume (synthetic and folder data do not)."""
    data = cfg.data
    return data._target_.rsplit(".", 1)[-1] in OXFORD_DATAMODULES and data.get("synthetic") is None


def data_setting(cfg) -> dict:
    """The run's data settings, resolved: what decides the data `prepare_data` makes for it."""
    return OmegaConf.to_container(cfg.data, resolve=True)


def record_file(cfg) -> Path | None:
    """Where the record of the config's data setting is kept; None for data whose files may change."""
    setting = data_setting(cfg)
    root = Path(
        setting.pop("root")
    ).expanduser()  # the record's place: the same data mounted elsewhere finds it
    generated = setting.get("synthetic") is not None
    downloaded = needs_oxford_download(cfg) and root == Path(cfg.paths.oxford_dir).expanduser()
    if setting.get("negatives") is not None or not (generated or downloaded):
        return None
    key = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:20]
    return root / CACHE_DIR / f"prepared-{key}.json"


def is_prepared(cfg) -> bool:
    """Whether `prepare_data` made this config's data, and the cache files it built are all still there."""
    record = record_file(cfg)
    if record is None:
        return False
    try:
        files = json.loads(record.read_text())["cache_files"]
        return bool(files) and all((record.parent / name).is_file() for name in files)
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: prepared again
        return False


def record_prepared(cfg, datamodule) -> None:
    """Record the config's data as prepared by `datamodule` (set up), unless it built no cache to name."""
    record = record_file(cfg)
    if (
        record is None or not datamodule.cache_files
    ):  # the JPEG pipeline, or a cache that could not be written
        return
    names = [os.path.relpath(path, record.parent) for path in datamodule.cache_files]
    atomic_write_text(record, json.dumps({"cache_files": names}) + "\n")
