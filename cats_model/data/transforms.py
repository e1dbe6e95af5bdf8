"""Image transforms: train augmentation and the eval pre-processing that predict and export reuse."""

from functools import partial

import torch
from torchvision.transforms import v2

from cats_model.data.images import centre_square

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_RATIO = 0.875  # resize to size / 0.875, then centre-crop: the usual ImageNet eval recipe


def _to_normalized_tensor(mean, std) -> list:
    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def train_transform(image_size: int, mean, std, crop_scale: tuple[float, float], color_jitter: float):
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter),
            *_to_normalized_tensor(mean, std),
        ]
    )


def eval_transform(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The centre square resized to image_size / 0.875, then its centre crop: the decoded cache's squares
    (data/cache.py) cropped the same way, whatever the image's aspect ratio."""
    side = round(image_size / EVAL_CROP_RATIO)
    return v2.Compose(
        [
            partial(centre_square, side=side),  # a partial, not a lambda: loader workers may pickle it
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )
