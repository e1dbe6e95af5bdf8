"""Decode every image once: a uint8 array of centre squares a little over the training size, kept on disk.

The array lives beside the dataset (on the data volume remotely), named by a key of the source files (path,
size, mtime) and the settings, so a changed dataset or image size gets a new cache and an unchanged one is
reused. Written to a temporary file and renamed, so a crash never leaves a half cache that looks whole.
"""

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cats_model.atomic import atomic_path
from cats_model.data.images import load_rgb
from cats_model.data.transforms import EVAL_CROP_RATIO
from cats_model.system import available_cpus

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def cache_side(image_size: int) -> int:
    """The eval resize (image_size / 0.875): centre crops of the cache then match the JPEG eval path."""
    return round(image_size / EVAL_CROP_RATIO)


def decode_square(path: str, side: int) -> np.ndarray:
    image = load_rgb(path, min_side=side)
    scale = side / min(image.size)
    size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))


def cache_key(paths: list[str], side: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{side}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def load_or_build(paths: list[str], image_size: int, cache_dir: Path) -> np.ndarray:
    """(len(paths), side, side, 3) uint8, memory-mapped; row i is paths[i]."""
    side = cache_side(image_size)
    target = cache_dir / f"images-{side}px-{cache_key(paths, side)}.npy"
    if target.is_file():
        return np.load(target, mmap_mode="r")
    log.info("decoding %d images once into %s", len(paths), target)
    with atomic_path(target) as partial:
        array = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.uint8, shape=(len(paths), side, side, 3)
        )

        def fill(i: int) -> None:
            array[i] = decode_square(paths[i], side)

        with ThreadPoolExecutor(max(1, available_cpus())) as pool:  # PIL decodes without holding the GIL
            list(pool.map(fill, range(len(paths)), chunksize=32))
        array.flush()
    return np.load(target, mmap_mode="r")
