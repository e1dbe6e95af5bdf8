"""Static int8 quantization of an exported model, and the accuracy guard it must pass before it is written.

Calibration images (a few hundred of the run's own training split, or `--calibration DIR`) set the activation
ranges; weights are quantized per output channel; the format is QDQ with uint8 activations and int8 weights,
the combination onnxruntime runs with its integer kernels on x86 and ARM CPUs. Then the fp32 and int8 models
classify the validation split (or `--eval DIR`, laid out as <class name>/<image>): the int8 model is refused
when their top-1 agreement or its accuracy falls short of the thresholds. A model with a cat-or-not head is held
to the same agreement on that answer too, over every image of the split (its not-cats included); breeds are
scored on the cats.

The run's dataset is found through the checkpoint's run folder: `<run>/checkpoints/x.ckpt` was trained on the
`data` of `<run>/.hydra/config.yaml`, resolved as when training (so CATS_MODEL_DATA_DIR moves it).
"""

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cats_model.cat_or_not import is_cat
from cats_model.data.images import image_files, list_images
from cats_model.errors import UserError
from cats_model.inference import ONNX_INPUT, ModelInfo, OnnxModel, TorchModel, printable, read_images
from cats_model.run_layout import CONFIG_FILE, HYDRA_DIR, hydra_file, run_of_checkpoint
from cats_model.stored_data import stored_datamodule

CALIBRATION_BATCH = 16
EVAL_BATCH = 64


@dataclass(frozen=True)
class Int8Options:
    calibration: Path | None = None  # a folder of images; None: the run's training split
    eval_dir: Path | None = None  # a folder of <class name>/<image>; None: the run's validation split
    calibration_images: int = 300
    min_agreement: float = 0.98
    max_accuracy_drop: float = 0.01

    def check(self) -> None:
        if not 1 <= self.calibration_images <= 100_000:
            raise UserError(f"--calibration-images must be 1 to 100000, got {self.calibration_images}")
        for name, value in (
            ("--min-agreement", self.min_agreement),
            ("--max-accuracy-drop", self.max_accuracy_drop),
        ):
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} is a fraction from 0 to 1, got {value}")


@dataclass(frozen=True)
class GuardSets:
    calibration: list[str]  # image paths
    calibration_source: str
    labelled: list[tuple[str, int]]  # (image path, class index)
    eval_source: str


def run_splits(model: TorchModel):
    """The splits of the dataset the checkpoint was trained on, and where that dataset lives. The run folder's
    config is read as data (cats_model.stored_data): nothing it names is called, nothing is downloaded."""
    config = hydra_file(run_of_checkpoint(model.path))
    if not config.is_file():
        raise UserError(
            f"{model.path} is not inside a run folder with {HYDRA_DIR}/{CONFIG_FILE}, so its dataset is unknown: "
            "give --calibration DIR and --eval DIR"
        )
    datamodule = stored_datamodule(config)
    datamodule.setup()
    splits = datamodule.splits
    if tuple(splits.classes) != model.info.class_names:
        raise UserError(
            f"the dataset of {config} now has other classes than the checkpoint: give --calibration and --eval"
        )
    return splits, str(datamodule.root)


def labelled_folder(root: Path, class_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(image, class index) for root/<class name>/<image>; a folder that is no class of the model is refused."""
    if not root.is_dir():
        raise UserError(f"--eval {root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [f.name for f in folders if f.name not in class_names]
    if unknown:
        raise UserError(
            f"--eval {root}: {printable(', '.join(unknown[:5]))} are not classes of this model; "
            "lay it out as <class name>/<image> with the model's class names"
        )
    return [(path, class_names.index(f.name)) for f in folders for path in list_images(f)]


def guard_sets(model: TorchModel, options: Int8Options) -> GuardSets:
    """The calibration images and the labelled images of the guard; a folder without images is refused."""
    options.check()
    run = run_splits(model) if options.calibration is None or options.eval_dir is None else None
    if options.calibration is not None:
        if not options.calibration.is_dir():
            raise UserError(f"--calibration {options.calibration}: no such folder")
        calibration, calibration_source = image_files([options.calibration]), str(options.calibration)
    else:
        calibration = [path for path, _ in run[0].train]
        calibration_source = f"the training split of {run[1]}"
    if not calibration:
        raise UserError(f"no images to calibrate on in {calibration_source}")
    if options.eval_dir is not None:
        labelled = labelled_folder(options.eval_dir, model.info.class_names)
        eval_source = str(options.eval_dir)
    else:
        labelled, eval_source = list(run[0].val), f"the validation split of {run[1]}"
    if not labelled:
        raise UserError(f"no images to check the int8 model on in {eval_source}")
    sample = random.Random(0).sample(calibration, min(options.calibration_images, len(calibration)))
    if not any_readable(sample, model.info):
        raise UserError(f"none of the calibration images in {calibration_source} could be read")
    if not any_readable([path for path, _ in labelled], model.info):
        raise UserError(f"none of the images to check the int8 model on in {eval_source} could be read")
    return GuardSets(sample, calibration_source, labelled, eval_source)


def any_readable(paths: list[str], info: ModelInfo) -> bool:
    """Whether one of `paths` reads as an image, tried a batch at a time until one does (usually the first batch):
    a folder of unreadable files is refused before the export, not after it."""
    return any(
        read_images(paths[start : start + CALIBRATION_BATCH], info)[1] is not None
        for start in range(0, len(paths), CALIBRATION_BATCH)
    )


class Calibration:
    """onnxruntime's CalibrationDataReader: prepared images, read a batch at a time."""

    def __init__(self, paths: list[str], info: ModelInfo):
        self.paths, self.info, self.used = paths, info, 0

    def get_next(self) -> dict | None:
        while self.paths:
            chunk, self.paths = self.paths[:CALIBRATION_BATCH], self.paths[CALIBRATION_BATCH:]
            read, batch, _ = read_images(chunk, self.info)
            if batch is not None:
                self.used += len(read)
                return {ONNX_INPUT: batch.numpy()}
        return None


def compare(fp32: OnnxModel, int8: OnnxModel, labelled: list[tuple[str, int]]) -> dict:
    """Top-1 accuracy of both models and how often they agree, over the readable labelled cats; with a cat-or-not
    head, also how often they agree on that answer, over every readable image."""
    correct_fp32 = correct_int8 = agree = total = cat_agree = cat_total = 0
    threshold = fp32.info.cat_threshold
    for start in range(0, len(labelled), EVAL_BATCH):
        chunk = dict(labelled[start : start + EVAL_BATCH])
        read, batch, _ = read_images(list(chunk), fp32.info)
        if batch is None:
            continue
        labels = np.array([chunk[path] for path in read])
        (breeds_fp32, cat_fp32), (breeds_int8, cat_int8) = fp32.answers(batch), int8.answers(batch)
        cats = is_cat(labels)
        top_fp32, top_int8 = breeds_fp32.argmax(axis=1)[cats], breeds_int8.argmax(axis=1)[cats]
        correct_fp32 += int((top_fp32 == labels[cats]).sum())
        correct_int8 += int((top_int8 == labels[cats]).sum())
        agree += int((top_fp32 == top_int8).sum())
        total += int(cats.sum())
        if threshold is not None:
            cat_agree += int(((cat_fp32 >= threshold) == (cat_int8 >= threshold)).sum())
            cat_total += len(read)
    if total == 0:
        raise UserError("none of the images to check the int8 model on could be read")
    report = {
        "accuracy_fp32": correct_fp32 / total,
        "accuracy_int8": correct_int8 / total,
        "agreement": agree / total,
        "images": total,
    }
    if threshold is not None:
        report.update(cat_agreement=cat_agree / cat_total, cat_images=cat_total)
    return report


def quantize_onnx(fp32_path: Path, int8_path: Path, calibration: Calibration) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8_path.with_name(f"{int8_path.stem}.prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))  # shapes inferred and the graph optimised first
    quantize_static(
        str(prepared), str(int8_path), calibration, quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def quantize(
    model: TorchModel, fp32_path: Path, int8_path: Path, sets: GuardSets, options: Int8Options
) -> dict:
    """Write the int8 model of `fp32_path` (exported from `model`) to `int8_path`, or refuse: the guard's report."""
    calibration = Calibration(list(sets.calibration), model.info)
    try:
        quantize_onnx(fp32_path, int8_path, calibration)
    except Exception:
        if calibration.used:
            raise
        # else onnxruntime's own words for it, "No data is collected", in a traceback: said below in a line
    if calibration.used == 0:
        raise UserError(f"none of the calibration images in {sets.calibration_source} could be read")
    report = compare(OnnxModel(fp32_path, model.info), OnnxModel(int8_path, model.info), sets.labelled)
    drop = report["accuracy_fp32"] - report["accuracy_int8"]
    cat_agreement = report.get("cat_agreement", 1.0)
    if (
        report["agreement"] < options.min_agreement
        or drop > options.max_accuracy_drop
        or cat_agreement < options.min_agreement
    ):
        cat = f", cat-or-not agreement {cat_agreement:.4f} on {report.get('cat_images')} images"
        raise UserError(
            f"int8 model refused, nothing written: top-1 agreement with fp32 {report['agreement']:.4f} "
            f"(--min-agreement {options.min_agreement}), accuracy {report['accuracy_int8']:.4f} vs fp32 "
            f"{report['accuracy_fp32']:.4f} (--max-accuracy-drop {options.max_accuracy_drop}) on "
            f"{report['images']} images of {sets.eval_source}{cat if 'cat_agreement' in report else ''}"
        )
    return {
        "calibration": {"source": sets.calibration_source, "images": calibration.used},
        "eval": {"source": sets.eval_source, "images": report.pop("images")},
        **report,
        "min_agreement": options.min_agreement,
        "max_accuracy_drop": options.max_accuracy_drop,
        "fp32_bytes": fp32_path.stat().st_size,
        "int8_bytes": int8_path.stat().st_size,
        "format": "QDQ: uint8 activations, int8 weights per output channel",
    }
