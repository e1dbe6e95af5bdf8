"""Input pipeline: the project's training loader against the usual torchvision loader, over the same JPEGs."""

import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from cats_model.data.datamodule import ImageDataModule


class PlainTorchvision(Dataset):
    """The usual baseline: decode the JPEG with PIL, then torchvision's classic transforms, per item."""

    def __init__(self, samples, image_size, mean, std):
        self.samples = samples
        self.transform = T.Compose([T.RandomResizedCrop(image_size), T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def images_per_sec(loader, finish, epochs: int) -> float:
    """Full passes over `loader` (the first one warms the workers up), each batch made model-ready by `finish`."""
    for batch, _ in loader:
        finish(batch)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch, _ in loader:
            count += len(finish(batch))
    return count / (time.perf_counter() - start)


def bench_input(dm: ImageDataModule, epochs: int, device: torch.device) -> dict:
    project = dm.train_dataloader()
    baseline = DataLoader(
        PlainTorchvision(dm.splits.train, dm.image_size, dm.mean, dm.std), batch_size=dm.batch_size,
        shuffle=True, drop_last=True, num_workers=dm.num_workers, persistent_workers=dm.num_workers > 0,
        pin_memory=device.type == "cuda",
    )  # fmt: skip

    def finish_project(batch):
        return dm.pipeline.on_device(batch.to(device, non_blocking=True), train=True)

    def finish_baseline(batch):
        return batch.to(device, non_blocking=True)

    rates = {"project": [], "baseline": []}
    for _ in range(2):  # alternated, so that a slow spell of the machine hits both
        rates["baseline"].append(images_per_sec(baseline, finish_baseline, epochs))
        rates["project"].append(images_per_sec(project, finish_project, epochs))
    project_rate, baseline_rate = (sum(r) / len(r) for r in (rates["project"], rates["baseline"]))
    return {
        "project_images_per_sec": project_rate,
        "baseline_images_per_sec": baseline_rate,
        "ratio": project_rate / baseline_rate,
    }
