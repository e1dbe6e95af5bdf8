"""What a run's data needs on the data volume before it starts, and what `prepare_data` has already made there.

`prepare_data` records each data setting it prepared in the dataset's own cache folder. A later `modal run` on
data already prepared then skips building the data module in its prepare_data container: no torch or Lightning
import, no listing of every image. Recorded only for data whose files the config fixes (Oxford-IIIT Pet, verified
on download, and the synthetic stand-in); a folder of one's own photos may change between runs, and its data
module finds out. A record whose decoded-image cache is gone counts for nothing; removing the dataset removes its
records.
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


def record_file(cfg) -> Path | None:
    """Where the record of the config's data setting is kept; None for data whose files may change."""
    if not (needs_oxford_download(cfg) or cfg.data.get("synthetic") is not None):
        return None
    data = OmegaConf.to_container(cfg.data, resolve=True)
    root = Path(data.pop("root"))  # the record's place: the same data mounted elsewhere finds it
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
    return root / CACHE_DIR / f"prepared-{key}.json"


def is_prepared(cfg) -> bool:
    """Whether `prepare_data` made this config's data, and its decoded-image cache (if it has one) is still there."""
    record = record_file(cfg)
    try:
        cache = json.loads(record.read_text())["cache"]
    except (AttributeError, OSError, ValueError, KeyError):
        return False
    return cache is None or (record.parent.parent / cache).is_file()


def record_prepared(cfg, datamodule) -> None:
    """Record the config's data as prepared by `datamodule` (set up): the cache file it reads, if any."""
    record = record_file(cfg)
    if record is None:
        return
    cache = getattr(datamodule.pipeline, "cache_file", None)
    made = {"cache": os.path.relpath(cache, record.parent.parent) if cache else None}
    atomic_write_text(record, json.dumps(made) + "\n")
