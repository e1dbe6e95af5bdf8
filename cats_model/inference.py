"""Using a trained model, the one way predict, serve, export's accuracy guard and the bench all go through.

A model is a checkpoint (PyTorch) or an exported `.onnx` with its sidecar JSON (onnxruntime on the CPU). Both
offer the same `ModelInfo` (class names, backbone, image size, normalisation, the cat-or-not threshold), checked
here once, and the same `probabilities(batch)` and `answers(batch)` (the breeds and, with a cat-or-not head,
P(cat)). Images are prepared by `read_image` alone: the eval transform with the model's values.
"""

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cats_model.data.images import load_rgb
from cats_model.data.transforms import EVAL_CROP_RATIO, eval_transform
from cats_model.errors import UserError
from cats_model.system import available_cpus, default_device
from cats_model.validation import RANGES, TOP_K_ALLOWED

IMAGE_SIZES = RANGES["data.image_size"]  # what training accepts; outside is a crafted or broken file
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 200  # characters
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"
ONNX_CAT_OUTPUT = "cat_logit"  # of a model with a cat-or-not head: P(cat) is its sigmoid


@dataclass(frozen=True)
class ModelInfo:
    """What a model needs from its input and gives back: everything but the weights."""

    class_names: tuple[str, ...]
    backbone: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cat_threshold: float | None = None  # a model with a cat-or-not head: a photo is a cat when P(cat) >= this

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def checked_info(values: dict, source: str | Path) -> ModelInfo:
    """The model's hyper-parameters, refused in one line when a crafted or damaged file holds nonsense."""

    def refuse(what: str):
        raise UserError(f"{source} holds {what}: not a model this project wrote (re-export or retrain it)")

    names, size = values.get("class_names"), values.get("image_size")
    if not isinstance(names, list | tuple) or not 1 <= len(names) <= MAX_CLASSES:
        refuse(f"class_names that are not a list of 1 to {MAX_CLASSES} names")
    if not all(isinstance(n, str) and 0 < len(n) <= MAX_CLASS_NAME for n in names):
        refuse(f"a class name that is not text of 1 to {MAX_CLASS_NAME} characters")
    if size not in IMAGE_SIZES:
        refuse(f"image_size={size!r:.40} (expected {IMAGE_SIZES})")
    for key, low, high in (("mean", 0.0, 1.0), ("std", 1e-3, 1.0)):
        triple = values.get(key)
        if not (
            isinstance(triple, list | tuple)
            and len(triple) == 3
            and all(isinstance(v, int | float) and math.isfinite(v) and low <= v <= high for v in triple)
        ):
            refuse(f"{key}={triple!r:.80} (expected three numbers from {low} to {high})")
    if not isinstance(values.get("backbone"), str) or len(values["backbone"]) > MAX_CLASS_NAME:
        refuse(f"backbone={values.get('backbone')!r:.80}")
    threshold = values.get("cat_threshold")
    if threshold is not None and not (
        isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0 <= threshold <= 1
    ):
        refuse(f"cat_threshold={threshold!r:.40} (expected a probability from 0 to 1)")
    return ModelInfo(
        tuple(names),
        values["backbone"],
        size,
        tuple(map(float, values["mean"])),
        tuple(map(float, values["std"])),
        None if threshold is None else float(threshold),
    )


def printable(text: str) -> str:
    """`text` with every control character written as an escape, so that no name can drive a terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class Model(Protocol):
    info: ModelInfo
    kind: str  # "checkpoint", "onnx" or "onnx-int8"
    path: Path

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Softmax over the classes for a batch of prepared images (N, 3, size, size): (N, classes) float32."""
        ...

    def answers(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """From one forward pass: `probabilities`, and P(cat) (N,) float32 or None for a breed-only model."""
        ...


class TorchModel:
    kind = "checkpoint"

    def __init__(self, path: Path, device: torch.device):
        from cats_model.checkpoint import load_classifier

        self.path, self.device = path, device
        self.module = load_classifier(path, device).float()
        self.info = checked_info({**self.module.hparams, "cat_threshold": self.module.cat_threshold}, path)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            logits = self.module(images.to(self.device)).float()
        return checked_output(self, len(images), logits.softmax(dim=1).cpu().numpy())

    def answers(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            breeds, cat = self.module.heads(images.to(self.device))
            cat = (
                None
                if cat is None
                else checked_cat_output(self, len(images), cat.float().sigmoid().cpu().numpy())
            )
            return checked_output(self, len(images), breeds.float().softmax(dim=1).cpu().numpy()), cat


class OnnxModel:
    def __init__(self, path: Path, info: ModelInfo, kind: str = "onnx", threads: int | None = None):
        import onnxruntime

        self.path, self.info, self.kind = path, info, kind
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise UserError(
                f"{path} is not a usable ONNX model ({' '.join(str(err).split())[:300]})"
            ) from err

    @classmethod
    def from_export(cls, path: Path, threads: int | None = None) -> "OnnxModel":
        """An exported model, described by the sidecar JSON beside it."""
        sidecar = read_sidecar(path)
        info = checked_info(sidecar, sidecar_path(path))
        model = cls(path, info, "onnx-int8" if sidecar.get("int8") else "onnx", threads)
        outputs = [output.name for output in model.session.get_outputs()]
        if info.cat_threshold is not None and ONNX_CAT_OUTPUT not in outputs:
            raise UserError(
                f"{path} has no {ONNX_CAT_OUTPUT} output, though its sidecar gives a cat_threshold"
            )
        return model

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        (logits,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: images.numpy()})
        return softmax(checked_output(self, len(images), logits))

    def answers(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        if self.info.cat_threshold is None:
            return self.probabilities(images), None
        logits, cat = self.session.run([ONNX_OUTPUT, ONNX_CAT_OUTPUT], {ONNX_INPUT: images.numpy()})
        breeds = softmax(checked_output(self, len(images), logits))
        return breeds, sigmoid(checked_cat_output(self, len(images), cat))


def checked_output(model: Model, images: int, output: np.ndarray) -> np.ndarray:
    """`output` if it holds one row per image, one finite value per class name; a UserError otherwise (a model
    that disagrees with its sidecar would give wrong labels, an IndexError, or NaN that is not JSON)."""
    expected = (images, len(model.info.class_names))
    if output.shape != expected:
        raise UserError(
            f"{model.path} gives an output of shape {tuple(output.shape)} for {images} images, not {expected} (one "
            "row per image, one value per class name): it does not match its class names; export it again"
        )
    if not np.isfinite(output).all():
        raise UserError(
            f"{model.path} gives values that are not finite (NaN or infinity): retrain or re-export it"
        )
    return output


def checked_cat_output(model: Model, images: int, output: np.ndarray) -> np.ndarray:
    """The cat-or-not output, (N,) finite values, with the same checks as `checked_output`."""
    output = output.reshape(-1) if output.ndim == 2 and output.shape[1] == 1 else output
    if output.shape != (images,) or not np.isfinite(output).all():
        raise UserError(
            f"{model.path} gives a cat-or-not output of shape {tuple(output.shape)} (or not finite) for {images} "
            "images, not one finite value per image: export it again"
        )
    return output


PROBE_IMAGES = 2  # a batch of two: a model that gives one row for any batch shows itself


def probed(model: Model) -> Model:
    """`model`, once it has answered a probe batch as its class names and image size say it should."""
    size = model.info.image_size
    images = torch.randn(PROBE_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        model.answers(images)  # both outputs, where the model has a cat head
    except UserError:
        raise
    except Exception as err:  # e.g. onnxruntime's refusal of an input size the graph does not take
        raise UserError(
            f"{model.path} fails on a batch of {PROBE_IMAGES} images of {size}x{size}, the size its "
            f"{'sidecar' if model.kind != 'checkpoint' else 'checkpoint'} gives "
            f"({' '.join(str(err).split())[:300]}): export it again"
        ) from err
    return model


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(onnx_path: Path) -> dict:
    """The export's JSON beside the model, checked to describe this very file (an older export's would lie)."""
    if not onnx_path.is_file():
        raise UserError(f"no ONNX model at {onnx_path}")
    path = sidecar_path(onnx_path)
    try:
        sidecar = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{onnx_path} has no sidecar {path.name} (class names, image size, normalisation): "
            "export it with `python -m cats_model.export`, which writes both"
        ) from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not readable JSON ({err})") from err
    if not isinstance(sidecar, dict) or sidecar.get("sha256") != file_sha256(onnx_path):
        raise UserError(f"{path} does not describe {onnx_path} (its sha256 differs): export the two again")
    return sidecar


def resolve_device(name: str | None) -> torch.device:
    """`--device`: None or "auto" is a GPU when there is one; anything else must name a device that exists."""
    if name in (None, "auto"):
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(
            f"--device {printable(name)!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise UserError(f"--device {name}: no such CUDA GPU is visible here; use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def load_model(path: str | Path, device: str | None = None, threads: int | None = None) -> Model:
    """A checkpoint (`.ckpt`, on `device`) or an exported `.onnx` with its sidecar (on the CPU), probed once.

    CPU work uses `threads` threads, by default the CPUs this process may use: PyTorch alone would count the
    host's cores, too many in a container with a CPU quota (PyTorch's setting is process-wide)."""
    path, threads = Path(path), threads or available_cpus()
    if path.suffix.lower() == ".onnx":
        if device not in (None, "auto", "cpu"):
            raise UserError(
                f"--device {printable(device)}: ONNX models run on the CPU here; use a checkpoint for a GPU"
            )
        return probed(OnnxModel.from_export(path, threads))
    torch.set_num_threads(threads)
    return probed(TorchModel(path, resolve_device(device)))


def describe(model: Model) -> dict:
    """What /model and the bench report: the info, the kind, the file."""
    return {"file": model.path.name, "kind": model.kind, **model.info.as_dict()}


@cache
def _transform(info: ModelInfo):
    return eval_transform(info.image_size, info.mean, info.std)


def decode_side(info: ModelInfo) -> int:
    """The shorter side a JPEG is decoded at, at least (at reduced scale when larger): twice the model's input."""
    return 2 * info.image_size


def read_image(source: str | Path | BinaryIO, info: ModelInfo) -> torch.Tensor:
    """Decode (upright RGB, JPEGs at reduced scale) and prepare one image: (3, size, size), normalised."""
    return _transform(info)(load_rgb(source, min_side=decode_side(info)))


def image_error(err: Exception) -> str:
    """Why an image could not be read, as the end of a sentence about it."""
    if isinstance(err, UnidentifiedImageError):
        return "is not an image (or not in a format Pillow reads)"
    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"has too many pixels to decode safely ({err})"
    if isinstance(err, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"cannot be opened ({err.strerror})"
    return f"could not be decoded ({' '.join(str(err).split())[:200] or type(err).__name__})"


def read_images(
    paths: list[str], info: ModelInfo, threads: int = 4
) -> tuple[list[str], torch.Tensor | None, dict]:
    """(paths read, their prepared batch or None, {path: why not} for the others), decoded in parallel."""

    def attempt(path):
        try:
            return read_image(path, info)
        except Exception as err:  # one unreadable file is reported, the others still predicted
            return err

    with ThreadPoolExecutor(threads) as pool:  # Pillow decodes without holding the GIL
        results = list(pool.map(attempt, paths))
    read = [(p, r) for p, r in zip(paths, results) if isinstance(r, torch.Tensor)]
    errors = {p: image_error(r) for p, r in zip(paths, results) if not isinstance(r, torch.Tensor)}
    return [p for p, _ in read], (torch.stack([r for _, r in read]) if read else None), errors


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int) -> list[list[dict]]:
    """Per image, the k most likely classes: [{"label", "probability"}], most likely first."""
    k = min(k, len(class_names))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [{"label": class_names[i], "probability": float(row[i])} for i in indices]
        for row, indices in zip(probabilities, order)
    ]


def check_top_k(value, name: str = "top-k") -> int:
    """`value` (a number, or the text of a web request's field) as a count of classes to show, or a UserError."""
    k = value
    if isinstance(value, str):
        try:
            k = int(value)
        except ValueError:
            pass
    if k not in TOP_K_ALLOWED:
        raise UserError(f"{name} must be a whole number of 1 or more, got {value!r:.20}")
    return k


def resize_side(info: ModelInfo) -> int:
    """The shorter side an image is resized to before the centre crop."""
    return round(info.image_size / EVAL_CROP_RATIO)
