"""Decode every image once: a uint8 array of centre squares a little over the training size, kept on disk.

The array lives beside the dataset (on the data volume remotely), named by a key of the listed files (path, size,
mtime) and the settings, so a changed dataset or image size gets a new cache and an unchanged one is reused.
Beside the array, the list of the listed files that could not be decoded: the same key vouches for it, so a run
over an unchanged dataset needs no scan for broken files.

Both are written to temporary files and renamed, the list first: a job that sees the array (several jobs of a
sweep share the data folder) always finds its list, and a crash never leaves a half array that looks whole.
"""

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cats_model.atomic import atomic_path, atomic_write_text
from cats_model.data.images import centre_square, load_rgb
from cats_model.data.transforms import EVAL_CROP_RATIO
from cats_model.system import available_cpus

log = logging.getLogger(__name__)
CACHE_VERSION = (
    4  # part of the key: a cache of another layout is never reused (3: squares cropped, then resized; 4: files
    # named by their path under the dataset's folder)
)


def cache_side(image_size: int) -> int:
    """The eval resize (image_size / 0.875): centre crops of the cache then match the JPEG eval path."""
    return round(image_size / EVAL_CROP_RATIO)


def decode_square(path: str, side: int) -> np.ndarray:
    return np.asarray(centre_square(load_rgb(path, min_side=side), side))


def cache_key(paths: list[str], side: int, root: Path) -> str:
    """Names the files by their path under `root`, the dataset's folder: the same data mounted elsewhere (a
    volume at /data in every container, a copy on a laptop) finds the same cache."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{side}".encode())
    for path in paths:
        name = os.path.relpath(path, root)
        try:
            stat = os.stat(path)
            digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError as err:  # a dangling link, say: listed, and found unreadable by the scan
            digest.update(f"|{name}|{type(err).__name__}".encode())
    return digest.hexdigest()[:20]


class DecodedCache:
    """The cache of exactly the files `listed` (sorted, before any is opened), at one image size."""

    def __init__(self, folder: Path, listed: list[str], image_size: int):
        self.listed, self.side, self.root = listed, cache_side(image_size), folder.parent
        name = f"images-{self.side}px-{cache_key(listed, self.side, self.root)}"
        self.array_file = folder / f"{name}.npy"
        self.unreadable_file = folder / f"{name}.unreadable.json"
        self.files = (self.array_file, self.unreadable_file)  # both, or the cache is built again

    def stored_unreadable(self) -> dict[str, str] | None:
        """{path: reason} for the listed files that could not be decoded, as found when the cache was built;
        None while there is no cache of these files."""
        if not self.array_file.is_file():
            return None
        try:
            stored = json.loads(self.unreadable_file.read_text())
        except (OSError, ValueError):  # removed or damaged by hand: scan and write both again
            return None
        return {os.path.normpath(self.root / name): reason for name, reason in stored.items()}

    def build(self, unreadable: dict[str, str]) -> dict[str, int]:
        """Decode the readable files into the array, unless that was done; return their rows, {path: row}."""
        readable = [path for path in self.listed if path not in unreadable]
        if self.stored_unreadable() is None:
            by_name = {os.path.relpath(path, self.root): reason for path, reason in unreadable.items()}
            atomic_write_text(self.unreadable_file, json.dumps(by_name, indent=1) + "\n")
            self._write_array(readable)
        return {path: row for row, path in enumerate(readable)}

    def _write_array(self, paths: list[str]) -> None:
        log.info("decoding %d images once into %s", len(paths), self.array_file)
        with atomic_path(self.array_file) as partial:
            array = np.lib.format.open_memmap(
                partial, mode="w+", dtype=np.uint8, shape=(len(paths), self.side, self.side, 3)
            )

            def fill(i: int) -> None:
                array[i] = decode_square(paths[i], self.side)

            with ThreadPoolExecutor(max(1, available_cpus())) as pool:  # PIL decodes without holding the GIL
                list(pool.map(fill, range(len(paths)), chunksize=32))
            array.flush()
