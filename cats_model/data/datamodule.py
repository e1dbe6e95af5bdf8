"""LightningDataModules: Oxford-IIIT Pet (cat breeds, cat vs other; real or synthetic) and a plain folder tree."""

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from cats_model.data.batch_augment import (
    WorkerCrop,
    centre_crop,
    crop_resize_flip,
    jitter_and_normalize,
    sample_boxes,
)
from cats_model.data.cache import load_or_build
from cats_model.data.dataset import CachedImageDataset, ImageDataset, already_batched
from cats_model.data.images import find_unreadable, list_images
from cats_model.data.oxford import CAT, DOG, OxfordPet, PetRecord
from cats_model.data.splits import Sample, stratified_split
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from cats_model.errors import UserError
from cats_model.system import default_num_workers

log = logging.getLogger(__name__)
PIPELINES = ("cached", "jpeg")


@dataclass
class Splits:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def paths(self) -> list[str]:
        """Every image of the three splits, sorted, once."""
        return sorted({path for part in (self.train, self.val, self.test) for path, _ in part})


class ImageDataModule(L.LightningDataModule):
    """Shared loading and augmentation; subclasses only say which files belong to which split and class."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 42,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        color_jitter: float = 0.3,
        max_bad_fraction: float = 0.05,
        pipeline: str = "cached",
    ):
        super().__init__()
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.crop_scale = crop_scale
        self.color_jitter = color_jitter
        self.max_bad_fraction = max_bad_fraction
        if pipeline not in PIPELINES:
            raise UserError(f"data.pipeline={pipeline} is not one of {', '.join(PIPELINES)}")
        self.pipeline = pipeline
        self.cache_file: Path | None = None  # the decoded-image cache, once built
        self.cache_rows: dict[str, int] = {}
        self.splits: Splits | None = None
        self.bad_images: dict[str, str] = {}  # unreadable files, skipped: {path: reason}

    def find_splits(self) -> Splits:
        """The splits of the readable images: subclasses pass the files they find through `readable()`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.bad_images = {}
            splits = self.find_splits()
            self.refuse_too_many_unreadable(len(splits.paths()) + len(self.bad_images))
            for name in ("train", "val", "test"):
                if not getattr(splits, name):
                    raise UserError(
                        f"the {name} split of {self.root} is empty: the dataset is too small or malformed"
                    )
            refuse_absent_classes(splits, self.root)
            self.splits = splits
            if self.pipeline == "cached":
                self.build_cache()
            log.info(
                "data: %d classes, %d train / %d val / %d test images from %s",
                len(splits.classes), len(self.splits.train), len(self.splits.val), len(self.splits.test), self.root,
            )  # fmt: skip

    def readable(self, samples: list[Sample]) -> list[Sample]:
        """`samples` without the files that cannot be decoded, which are logged and listed in `bad_images`.
        Split after this, so that a broken file never takes the place of a good one in val or test."""
        bad = find_unreadable(sorted({path for path, _ in samples}))
        for path, reason in bad.items():
            log.warning("skipping unreadable image %s (%s)", path, reason)
        self.bad_images.update(bad)
        return [sample for sample in samples if sample[0] not in bad]

    def refuse_too_many_unreadable(self, total: int) -> None:
        if len(self.bad_images) > self.max_bad_fraction * total:
            example, reason = next(iter(self.bad_images.items()))
            raise UserError(
                f"{len(self.bad_images)} of {total} images under {self.root} are unreadable, more than "
                f"data.max_bad_fraction={self.max_bad_fraction} (e.g. {example}: {reason}); repair or remove them"
            )

    def build_cache(self) -> None:
        paths = self.splits.paths()
        try:
            array = load_or_build(paths, self.image_size, self.root / ".cache")
        except OSError as err:  # a read-only dataset folder, a full disk: decode per batch instead
            log.warning("no decoded-image cache (%s); reading the JPEG files each epoch", err)
            self.pipeline = "jpeg"
            return
        self.cache_file = Path(array.filename)
        self.cache_rows = {path: row for row, path in enumerate(paths)}

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return self.splits.classes

    def carve_val(self, trainval: list[Sample]) -> tuple[list[Sample], list[Sample]]:
        train, val = stratified_split(trainval, (1 - self.val_fraction, self.val_fraction), self.seed)
        return train, val

    def _loader(self, samples: list[Sample], train: bool) -> DataLoader:
        if self.pipeline == "cached":  # uint8, read a batch at a time; augmented in on_after_batch_transfer
            rows = [(self.cache_rows[path], label) for path, label in samples]
            # On a GPU the whole augmentation runs there; on a CPU the workers crop, beside the training process.
            crop = (
                None
                if self._on_gpu()
                else WorkerCrop(self.image_size, tuple(self.crop_scale) if train else None)
            )
            dataset, collate = CachedImageDataset(self.cache_file, rows, crop), already_batched
        else:  # large JPEGs decode at reduced scale, still twice the training size (enough for the random crops)
            transform = (
                train_transform(self.image_size, self.mean, self.std, self.crop_scale, self.color_jitter)
                if train
                else eval_transform(self.image_size, self.mean, self.std)
            )
            dataset, collate = ImageDataset(samples, transform, min_side=2 * self.image_size), None
        return DataLoader(
            dataset,
            collate_fn=collate,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(samples) > self.batch_size,  # a last batch of 1 breaks BatchNorm
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Cached batches arrive as uint8 squares: crop, flip, jitter and normalise them where they are (the GPU)."""
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.finish_batch(images, training), labels

    def finish_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """Make a batch model-ready. (N, S, S, 3) uint8 squares (GPU) are cropped here; (N, 3, size, size) crops
        in 0..255 (cut by CPU workers) only get colour and normalisation; JPEG-pipeline batches are ready."""
        if self.pipeline == "jpeg":
            return images
        if images.dtype == torch.uint8 and images.shape[-1] == 3:
            if train:
                images = crop_resize_flip(
                    images,
                    self.image_size,
                    sample_boxes(len(images), tuple(self.crop_scale), device=images.device),
                )
            else:
                images = centre_crop(images, self.image_size)
        return jitter_and_normalize(images, self.color_jitter if train else 0.0, self.mean, self.std)

    def _on_gpu(self) -> bool:
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, train=False)


class OxfordPetDataModule(ImageDataModule):
    """Oxford-IIIT Pet read from its own annotation lists; `synthetic` generates a stand-in tree at `root`."""

    def __init__(self, *args, synthetic: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.synthetic = None if synthetic is None else SyntheticSpec(**synthetic)

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            ensure_synthetic(self.root, self.synthetic)
        OxfordPet(self.root).require()

    def label(self, trainval: list[PetRecord], test: list[PetRecord]):
        """Return (class names, labelled trainval, labelled test) as lists of (record, class index)."""
        raise NotImplementedError

    def find_splits(self) -> Splits:
        self.prepare_data()
        dataset = OxfordPet(self.root)
        classes, trainval, test = self.label(dataset.split("trainval"), dataset.split("test"))

        def existing(pairs):
            samples = [(str(dataset.image_path(record)), label) for record, label in pairs]
            present = [s for s in samples if Path(s[0]).is_file()]
            if len(present) < len(samples):
                log.warning(
                    "%d images listed in the annotations are missing under %s",
                    len(samples) - len(present),
                    dataset.images_dir,
                )
            return present

        train, val = self.carve_val(self.readable(existing(trainval)))
        return Splits(classes, train, val, self.readable(existing(test)))


class CatBreedsDataModule(OxfordPetDataModule):
    """The 12 cat breeds; class names and order come from the annotation lists' class ids."""

    def label(self, trainval, test):
        cats = [r for r in trainval + test if r.species == CAT]
        names = {r.class_id: r.breed for r in cats}
        index = {class_id: i for i, class_id in enumerate(sorted(names))}

        def labelled(records):
            return [(r, index[r.class_id]) for r in records if r.species == CAT]

        return [names[c] for c in sorted(names)], labelled(trainval), labelled(test)


class CatVsOtherDataModule(OxfordPetDataModule):
    """Cat against not-cat (the dog images), with `other_per_cat` not-cat images drawn per cat image."""

    def __init__(self, *args, other_per_cat: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.other_per_cat = other_per_cat

    def label(self, trainval, test):
        def labelled(records, split):
            cats = [r for r in records if r.species == CAT]
            dogs = sorted((r for r in records if r.species == DOG), key=lambda r: r.image)
            wanted = min(len(dogs), round(len(cats) * self.other_per_cat))
            others = random.Random(f"{self.seed}:other:{split}").sample(dogs, wanted)
            return [(r, 0) for r in cats] + [(r, 1) for r in sorted(others, key=lambda r: r.image)]

        return ["cat", "other"], labelled(trainval, "trainval"), labelled(test, "test")


class FolderDataModule(ImageDataModule):
    """Any tree of `root/<class name>/<image>`; split deterministically per class into train/val/test."""

    def __init__(self, *args, test_fraction: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_fraction = test_fraction

    def find_splits(self) -> Splits:
        folders = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        refuse_overlapping(self.root, folders)
        files = {folder.name: list_images(folder) for folder in folders}
        classes = [name for name, paths in files.items() if paths]
        if len(classes) < 2:
            raise UserError(
                f"{self.root} needs at least two class folders with images (root/<class>/<image>)"
            )
        samples = [(path, label) for label, name in enumerate(classes) for path in files[name]]
        fractions = (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)
        train, val, test = stratified_split(self.readable(samples), fractions, self.seed)
        return Splits(classes, train, val, test)


def refuse_absent_classes(splits: Splits, root: Path) -> None:
    """Every class must be in every split: a class missing from the test split would score as perfect in the
    macro averages, one missing from validation would never count in the choice of the best epoch."""
    for name in ("train", "val", "test"):
        present = {label for _, label in getattr(splits, name)}
        absent = [c for i, c in enumerate(splits.classes) if i not in present]
        if absent:
            raise UserError(
                f"{len(absent)} class(es) under {root} have no image in the {name} split ({', '.join(absent[:5])}): "
                f"a class needs at least 3 readable images, one per split; add images or remove the class"
            )


def refuse_overlapping(root: Path, folders: list[Path]) -> None:
    """Refuse class folders that hold the same images twice: a link back to the root (or above it), or two
    folders, one inside (or a link to) the other. Their images would count in two classes at once."""
    resolved = {folder: folder.resolve() for folder in folders}
    top = root.resolve()
    for folder, real in resolved.items():
        if top.is_relative_to(real):
            raise UserError(
                f"class folder {folder} is a link to {real}, which holds the dataset itself: every image would "
                f"also count in class {folder.name!r}; remove the link"
            )
    for folder, real in resolved.items():
        for other, other_real in resolved.items():
            if other != folder and real.is_relative_to(other_real):
                raise UserError(
                    f"class folders {folder} and {other} hold the same images ({real}): each image would count "
                    f"in two classes; remove the link or copy the images"
                )
