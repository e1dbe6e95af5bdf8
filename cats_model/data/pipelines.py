"""The two ways images reach the model, each a dataset for the loader and a step on the training device.

`CachedPipeline` reads rows of the decoded-image cache a batch at a time and augments whole batches; the
`JpegPipeline` decodes and transforms each file on its own, as usual with torchvision. The data module chooses
one in `setup`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cats_model.data.batch_augment import (
    WorkerCrop,
    centre_crop,
    crop_resize_flip,
    jitter_and_normalize,
    sample_boxes,
)
from cats_model.data.dataset import CachedImageDataset, ImageDataset, already_batched
from cats_model.data.splits import Sample
from cats_model.data.transforms import eval_transform, train_transform


@dataclass(frozen=True)
class Augmentation:
    """What becomes of an image on its way to the model: its size, the training augmentation, normalisation."""

    image_size: int
    crop_scale: tuple[float, float]
    color_jitter: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def crops_on_device(device: torch.device) -> bool:
    """Where the cached pipeline crops: on a GPU, on the device (one resampling of the whole batch); on a CPU, in
    the loader's workers, beside the training process (a uint8 resize per image, several times cheaper there)."""
    return device.type == "cuda"


class CachedPipeline:
    """Batches of uint8 squares from the cache. On a GPU they are cropped, flipped, jittered and normalised there;
    on a CPU the workers crop them and the training process does only the fused colour step."""

    def __init__(self, augmentation: Augmentation, cache_file: Path, rows: dict[str, int]):
        self.augmentation, self.cache_file, self.rows = augmentation, cache_file, rows

    def dataset(
        self, samples: list[Sample], train: bool, device: torch.device
    ) -> tuple[Dataset, Callable | None]:
        """The loader's dataset and collate function, for batches bound for `device`."""
        aug = self.augmentation
        crop = (
            None if crops_on_device(device) else WorkerCrop(aug.image_size, aug.crop_scale if train else None)
        )
        items = [(self.rows[path], label) for path, label in samples]
        return CachedImageDataset(self.cache_file, items, crop), already_batched

    def on_device(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """A batch from `dataset`, on the training device, made model-ready."""
        aug = self.augmentation
        if crops_on_device(images.device):
            if train:
                boxes = sample_boxes(len(images), aug.crop_scale, device=images.device)
                images = crop_resize_flip(images, aug.image_size, boxes)
            else:
                images = centre_crop(images, aug.image_size)
        return jitter_and_normalize(images, aug.color_jitter if train else 0.0, aug.mean, aug.std)


class JpegPipeline:
    """Each file decoded and transformed in a worker: batches leave the loader model-ready."""

    def __init__(self, augmentation: Augmentation):
        self.augmentation = augmentation

    def dataset(
        self, samples: list[Sample], train: bool, device: torch.device
    ) -> tuple[Dataset, Callable | None]:
        aug = self.augmentation
        if train:
            transform = train_transform(aug.image_size, aug.mean, aug.std, aug.crop_scale, aug.color_jitter)
        else:
            transform = eval_transform(aug.image_size, aug.mean, aug.std)
        # Large JPEGs decode at reduced scale, still twice the training size (enough for the random crops).
        return ImageDataset(samples, transform, min_side=2 * aug.image_size), None

    def on_device(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        return images
