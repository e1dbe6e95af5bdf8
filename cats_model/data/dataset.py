"""Map-style datasets: JPEG files decoded per item, or rows of the decoded-image cache."""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cats_model.data.images import load_rgb
from cats_model.data.splits import Sample


class ImageDataset(Dataset):
    def __init__(self, samples: list[Sample], transform, min_side: int | None = None):
        self.samples = samples
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(load_rgb(path, self.min_side)), label


class CachedImageDataset(Dataset):
    """(row of the cache, class index) items; each worker opens the memory map itself (nothing large is pickled).

    Batches are read in one go (`__getitems__`, one fancy-indexed copy instead of an item-by-item copy and a
    stack); use it with `collate_fn=already_batched`.
    """

    def __init__(self, cache_file: Path, items: list[tuple[int, int]], crop=None):
        self.cache_file = cache_file
        self.crop = crop  # applied to each batch in the worker (CPU training), or None: squares as stored
        self.rows = np.array([row for row, _ in items], dtype=np.int64)
        self.labels = torch.tensor([label for _, label in items], dtype=torch.long)
        self._array = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: list[int]):
        if self._array is None:
            self._array = np.load(self.cache_file, mmap_mode="r")
        images = torch.from_numpy(self._array[self.rows[indices]])
        return (self.crop(images) if self.crop else images), self.labels[indices]

    def __getitem__(self, index: int):
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def __getstate__(self):
        return {**self.__dict__, "_array": None}


def already_batched(batch):
    """The collate function for datasets whose __getitems__ returns a whole batch."""
    return batch
