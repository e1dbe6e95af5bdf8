"""A map-style dataset over (image path, class index) samples."""

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
