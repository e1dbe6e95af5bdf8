"""LightningDataModules: Oxford-IIIT Pet (cat breeds, cat vs other; real or synthetic) and a plain folder tree.

As Lightning intends: `prepare_data` fetches or generates the files, `setup` reads them (lists the images, drops
the unreadable ones, splits, chooses the pipeline). The Trainer calls both again: cheap, nothing is read twice.
"""

import logging
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from cats_model import cat_or_not
from cats_model.data import CACHE_DIR
from cats_model.data.cache import DecodedCache
from cats_model.data.images import find_unreadable, list_images
from cats_model.data.oxford import CAT, DOG, OxfordPet, PetRecord
from cats_model.data.pipelines import Augmentation, CachedPipeline, JpegPipeline
from cats_model.data.splits import Sample, Splits, stratified_split
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cats_model.errors import UserError
from cats_model.system import default_device, default_num_workers, uses_cuda

log = logging.getLogger(__name__)
PIPELINES = ("cached", "jpeg")


class ImageDataModule(L.LightningDataModule):
    """Shared reading, loading and augmentation; subclasses say which files belong to which class and split."""

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
        self.max_bad_fraction = max_bad_fraction
        if pipeline not in PIPELINES:
            raise UserError(f"data.pipeline={pipeline} is not one of {', '.join(PIPELINES)}")
        self.use_cache = pipeline == "cached"
        self.augmentation = Augmentation(image_size, tuple(crop_scale), color_jitter, self.mean, self.std)
        # Set by setup():
        self.class_names: list[str] = []
        self.splits: Splits | None = None
        self.bad_images: dict[str, str] = {}  # unreadable files, skipped: {path: reason}
        self.pipeline: CachedPipeline | JpegPipeline | None = None
        # The files of the decoded-image cache the pipeline reads, if it reads one.
        self.cache_files: tuple[Path, ...] = ()

    def list_files(self) -> tuple[list[str], list[list[Sample]]]:
        """(class names, the labelled image files in the groups that `split` divides), none opened yet."""
        raise NotImplementedError

    @property
    def has_not_cat(self) -> bool:
        """Whether training holds images of no cat (negative labels): the model then learns a cat-or-not head."""
        return any(label < 0 for _, label in self.splits.train)

    def split(self, groups: list[list[Sample]]) -> tuple[list[Sample], list[Sample], list[Sample]]:
        """Train, val and test from the groups of `list_files`, once the unreadable files are out of them."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        classes, groups = self.list_files()
        listed = sorted({path for group in groups for path, _ in group})
        cache = DecodedCache(self.root / CACHE_DIR, listed, self.image_size) if self.use_cache else None
        self.bad_images = self.find_bad_images(listed, cache)
        self.refuse_too_many_unreadable(len(listed))
        # Split after dropping them, so that a broken file never takes the place of a good one in val or test.
        readable = [[sample for sample in group if sample[0] not in self.bad_images] for group in groups]
        splits = Splits(classes, *self.split(readable))
        for name in ("train", "val", "test"):
            if not getattr(splits, name):
                raise UserError(
                    f"the {name} split of {self.root} is empty: the dataset is too small or malformed"
                )
        refuse_absent_classes(splits, self.root)
        self.splits, self.class_names = splits, classes
        self.pipeline = self.choose_pipeline(cache)
        log.info(
            "data: %d classes, %d train / %d val / %d test images from %s",
            len(classes), len(splits.train), len(splits.val), len(splits.test), self.root,
        )  # fmt: skip

    def find_bad_images(self, listed: list[str], cache: DecodedCache | None) -> dict[str, str]:
        """The files among `listed` that cannot be decoded, logged: as the cache of exactly these files found
        them, or by decoding each one."""
        known = cache.stored_unreadable() if cache is not None else None
        bad = known if known is not None else find_unreadable(listed)
        for path, reason in bad.items():
            log.warning("skipping unreadable image %s (%s)", path, reason)
        return bad

    def refuse_too_many_unreadable(self, total: int) -> None:
        if len(self.bad_images) > self.max_bad_fraction * total:
            example, reason = next(iter(self.bad_images.items()))
            raise UserError(
                f"{len(self.bad_images)} of {total} images under {self.root} are unreadable, more than "
                f"data.max_bad_fraction={self.max_bad_fraction} (e.g. {example}: {reason}); repair or remove them"
            )

    def choose_pipeline(self, cache: DecodedCache | None) -> CachedPipeline | JpegPipeline:
        if cache is not None:
            try:
                rows = cache.build(self.bad_images)
                self.cache_files = cache.files
                return CachedPipeline(self.augmentation, cache.array_file, rows)
            except OSError as err:  # a read-only dataset folder, a full disk: decode per batch instead
                log.warning("no decoded-image cache (%s); reading the image files each epoch", err)
        return JpegPipeline(self.augmentation)

    def _loader(self, samples: list[Sample], train: bool) -> DataLoader:
        dataset, collate = self.pipeline.dataset(samples, train, self._device())
        return DataLoader(
            dataset,
            collate_fn=collate,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(samples) > self.batch_size,  # a last batch of 1 breaks BatchNorm
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=uses_cuda(),
        )

    def _device(self) -> torch.device:
        """Where the batches go: the Trainer's device, or without a Trainer the GPU when there is one."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return default_device()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.pipeline.on_device(images, training), labels

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

    def list_files(self) -> tuple[list[str], list[list[Sample]]]:
        dataset = OxfordPet(self.root)
        dataset.require()
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

        return classes, [existing(trainval), existing(test)]

    def split(self, groups):  # the official test split; validation carved from trainval
        trainval, test = groups
        train, val = stratified_split(trainval, (1 - self.val_fraction, self.val_fraction), self.seed)
        return train, val, test


class CatBreedsDataModule(OxfordPetDataModule):
    """The 12 cat breeds; class names and order come from the annotation lists' class ids.

    With `dogs`, the dataset's dog images come along as not-cat, and so do the images under `negatives` (any
    folder of images, split in the proportions of the cats): the model then answers cat or not as well."""

    def __init__(self, *args, dogs: bool = True, negatives: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dogs = dogs
        self.negatives = None if negatives is None else Path(negatives).expanduser()

    def label(self, trainval, test):
        cats = [r for r in trainval + test if r.species == CAT]
        names = {r.class_id: r.breed for r in cats}
        index = {class_id: i for i, class_id in enumerate(sorted(names))}

        def labelled(records):
            breeds = [(r, index[r.class_id]) for r in records if r.species == CAT]
            dogs = [(r, cat_or_not.DOG) for r in records if r.species == DOG] if self.dogs else []
            return breeds + dogs

        return [names[c] for c in sorted(names)], labelled(trainval), labelled(test)

    def list_files(self) -> tuple[list[str], list[list[Sample]]]:
        classes, groups = super().list_files()
        if self.negatives is None:
            return classes, groups
        if not self.negatives.is_dir():
            raise UserError(
                f"data.negatives={self.negatives}: no such folder (give a folder of images of no cat)"
            )
        images = list_images(self.negatives)
        if not images:
            raise UserError(f"data.negatives={self.negatives} holds no images (.jpg, .png, ...)")
        return classes, [*groups, [(path, cat_or_not.NEGATIVE) for path in images]]

    def split(self, groups):
        train, val, test = super().split(groups[:2])
        if len(groups) == 2:
            return train, val, test
        trainval_cats, test_cats = ([s for s in g if s[1] >= 0] for g in groups[:2])
        test_share = len(test_cats) / max(1, len(trainval_cats) + len(test_cats))
        val_share = (1 - test_share) * self.val_fraction
        more = stratified_split(groups[2], (1 - val_share - test_share, val_share, test_share), self.seed)
        return train + more[0], val + more[1], test + more[2]


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

    def list_files(self) -> tuple[list[str], list[list[Sample]]]:
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise UserError(
                f"data.root={self.root} {what}: give the folder of your photos, one subfolder per class "
                "(root/<class>/<image>)"
            )
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        refuse_overlapping(self.root, folders)
        files = {folder.name: list_images(folder) for folder in folders}
        classes = [name for name, paths in files.items() if paths]
        if len(classes) < 2:
            raise UserError(
                f"{self.root} needs at least two class folders with images (root/<class>/<image>)"
            )
        return classes, [[(path, label) for label, name in enumerate(classes) for path in files[name]]]

    def split(self, groups):
        fractions = (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)
        return stratified_split(groups[0], fractions, self.seed)


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
