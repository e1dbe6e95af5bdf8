"""The fast input pipeline: a decoded-image cache and whole-batch augmentation, against the JPEG path."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cats_model.data import datamodule as datamodule_module
from cats_model.data.batch_augment import GREY, crop_resize_flip, jitter_and_normalize, sample_boxes
from cats_model.data.cache import DecodedCache, cache_side
from cats_model.data.datamodule import CatBreedsDataModule
from cats_model.data.images import load_rgb
from cats_model.data.pipelines import CachedPipeline, JpegPipeline
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.data.transforms import eval_transform


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    spec = SyntheticSpec(trainval_per_class=4, test_per_class=1, dog_breeds=0, min_size=90, max_size=260)
    return ensure_synthetic(tmp_path_factory.mktemp("pipeline") / "pets", spec)


def datamodule(root, pipeline):
    dm = CatBreedsDataModule(
        str(root), image_size=48, batch_size=8, num_workers=0, pipeline=pipeline, val_fraction=0.25
    )
    dm.setup()
    return dm


def built(paths, image_size, folder) -> DecodedCache:
    cache = DecodedCache(folder, paths, image_size)
    cache.build({})
    return cache


def test_the_cache_is_built_once_and_rebuilt_when_a_file_changes(pets, tmp_path):
    paths = sorted(str(p) for p in (pets / "images").glob("*.jpg"))
    first = built(paths, 48, tmp_path)
    array = np.load(first.array_file, mmap_mode="r")
    assert array.shape == (len(paths), cache_side(48), cache_side(48), 3) and array.dtype == np.uint8
    stamp = os.stat(first.array_file).st_mtime_ns
    assert os.stat(built(paths, 48, tmp_path).array_file).st_mtime_ns == stamp  # reused as is
    os.utime(paths[0], ns=(stamp, stamp + 10**9))  # a source file changes: a new cache under a new key
    assert built(paths, 48, tmp_path).array_file != first.array_file
    other_size = built(paths, 64, tmp_path).array_file  # so does another image size
    assert np.load(other_size, mmap_mode="r").shape[1] == cache_side(64)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_cache_carries_its_list_of_unreadable_files(tmp_path, monkeypatch):
    """A second setup over unchanged files takes the unreadable ones from the cache, decoding nothing to find
    them, and splits exactly as the first; the list is written before the array, so no job that sees the array
    (sweep jobs share the data folder) can miss its list."""
    spec = SyntheticSpec(trainval_per_class=4, test_per_class=1, dog_breeds=0, min_size=40, max_size=60)
    root = ensure_synthetic(tmp_path / "pets", spec)
    broken = root / "images" / "Bengal_2.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(b), real_replace(a, b)))
    first = datamodule(root, "cached")
    assert list(first.bad_images) == [str(broken)]
    assert [Path(p).suffix for p in replaced] == [".json", ".npy"]  # the list first, then the array

    def no_scan(paths):
        raise AssertionError("scanned again")

    monkeypatch.setattr(datamodule_module, "find_unreadable", no_scan)
    second = datamodule(root, "cached")
    assert second.bad_images == first.bad_images and second.splits == first.splits
    assert str(broken) not in {path for part in (second.splits.train, second.splits.val) for path, _ in part}
    assert (
        isinstance(second.pipeline, CachedPipeline)
        and second.pipeline.cache_file == first.pipeline.cache_file
    )


def test_cached_eval_batches_match_the_jpeg_eval_transform(pets):
    cached, jpeg = datamodule(pets, "cached"), datamodule(pets, "jpeg")
    images, labels = next(iter(cached.test_dataloader()))
    ready = cached.pipeline.on_device(images, train=False)
    reference, reference_labels = next(iter(jpeg.test_dataloader()))
    assert torch.equal(labels, reference_labels) and ready.shape == reference.shape == (8, 3, 48, 48)
    # Two resizing implementations (PIL once, torchvision per item): equal up to interpolation detail, here
    # under 0.1 in normalised units (about 2% of the pixel range) on average; a wrong crop or colour is far more.
    assert (ready - reference).abs().mean() < 0.1
    path = cached.splits.test[0][0]
    single = eval_transform(48)(load_rgb(path))
    assert (ready[0] - single).abs().mean() < 0.1
    assert (ready[0] - reference[1]).abs().mean() > 0.3  # another image is far away: the check can fail


def test_batch_augmentation_crops_flips_and_jitters_each_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 64, 64, 3), dtype=torch.uint8)
    boxes = sample_boxes(16, scale=(0.35, 1.0))
    out = jitter_and_normalize(crop_resize_flip(images, 32, boxes), 0.3, (0.5,) * 3, (0.25,) * 3)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert len({round(float(x.mean()), 4) for x in out}) == 16  # every image got its own crop and colours
    # The full view: each output is the image or its mirror, about half of them mirrored.
    full = sample_boxes(64, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = images[:1].expand(64, -1, -1, -1)
    views = crop_resize_flip(same, 64, full)
    original = same[:1].permute(0, 3, 1, 2).float()
    flipped = (views == original.flip(3)).flatten(1).all(1)
    kept = (views == original).flatten(1).all(1)
    assert (flipped == (full[:, 4] < 0)).all() and (kept | flipped).all() and 10 < int(flipped.sum()) < 54


def test_the_gpu_and_cpu_resampling_agree():
    """The GPU path (one grid resampling of the batch) runs here on the CPU, against the per-image resize."""
    torch.manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8) * 255, size=(73, 73), mode="bilinear")
    images = smooth.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    boxes = sample_boxes(8, scale=(0.6, 1.0))
    grid, resize = (crop_resize_flip(images, 64, boxes, method=m) for m in ("grid", "resize"))
    assert (grid - resize).abs().mean() < 3  # of 255: the same crops, two interpolations
    assert (
        grid - crop_resize_flip(images, 64, sample_boxes(8, scale=(0.6, 1.0)), method="grid")
    ).abs().mean() > 10


def test_fused_colour_jitter_matches_the_step_by_step_definition():
    n = 11  # more than one of the CPU's chunks of 8 images, and a partial one
    torch.manual_seed(2)
    # smooth like photos, where the mean grey of every 4th pixel is close to the mean of all (noise is not)
    images = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8) * 255, size=(64, 64), mode="bilinear")
    torch.manual_seed(3)
    fused = jitter_and_normalize(images, 0.4, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    torch.manual_seed(3)
    b, c, s = torch.empty(3, n).uniform_(0.6, 1.4)
    x = images / 255 * b.view(n, 1, 1, 1)
    grey = torch.tensor(GREY).view(1, 3, 1, 1)
    # contrast pivots on the image's mean grey, taken (for speed) over every 4th pixel in each direction
    mean_grey = (x[:, :, ::4, ::4] * grey).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    assert torch.allclose(mean_grey, (x * grey).sum(1, keepdim=True).mean((2, 3), keepdim=True), atol=0.02)
    x = (x - mean_grey) * c.view(n, 1, 1, 1) + mean_grey
    x = (x - (x * grey).sum(1, keepdim=True)) * s.view(n, 1, 1, 1) + (x * grey).sum(1, keepdim=True)
    expected = (x - torch.tensor((0.4, 0.5, 0.6)).view(1, 3, 1, 1)) / torch.tensor((0.2, 0.25, 0.3)).view(
        1, 3, 1, 1
    )
    assert torch.allclose(fused, expected, atol=1e-4)
    plain = jitter_and_normalize(images, 0.0, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert torch.allclose(
        plain,
        (images / 255 - torch.tensor((0.4, 0.5, 0.6)).view(1, 3, 1, 1))
        / torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1),
        atol=1e-5,
    )


def test_the_jpeg_pipeline_stays_selectable(pets):
    dm = datamodule(pets, "jpeg")
    assert isinstance(dm.pipeline, JpegPipeline)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape == (8, 3, 48, 48)
    assert dm.pipeline.on_device(images, train=True) is images


def test_without_a_writable_dataset_folder_the_jpeg_pipeline_is_chosen(pets, monkeypatch):
    def read_only(self, unreadable):
        raise PermissionError(13, "Permission denied", str(self.array_file))

    monkeypatch.setattr(DecodedCache, "build", read_only)
    dm = datamodule(pets, "cached")
    assert isinstance(dm.pipeline, JpegPipeline)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape == (8, 3, 48, 48)


def test_cpu_batches_are_cropped_by_the_workers_and_only_coloured_after(pets):
    dm = datamodule(pets, "cached")
    images, _ = next(iter(dm.train_dataloader()))  # no GPU here: cropped in the loader
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 48, 48)
    ready = dm.pipeline.on_device(images, train=True)
    assert ready.dtype == torch.float32 and ready.shape == (8, 3, 48, 48)
