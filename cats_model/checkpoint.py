"""Loading a trained checkpoint on its own: no config needed, no pickle executed."""

import pickle
from pathlib import Path

import torch

from cats_model.errors import UserError
from cats_model.model.classifier import CatClassifier


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> CatClassifier:
    """The classifier in `path`, in eval mode, with its class names, image size and normalisation in .hparams."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        # weights_only: tensors and plain values only. pretrained=False: the weights come from the checkpoint,
        # so no ImageNet download; strict loading refuses a checkpoint whose weights do not all match.
        model = CatClassifier.load_from_checkpoint(
            path, map_location=device, weights_only=True, pretrained=False
        )
    except Exception as err:
        raise UserError(
            f"{path} is not a usable tiny-cats-model checkpoint ({why_unloadable(err, 300)})"
        ) from err
    return model.eval()


def why_unloadable(err: Exception, limit: int) -> str:
    """torch.load's reason, in a line. Its weights_only refusal advises loading without it, which would run the
    file's pickled code: never done here, so that advice is not passed on."""
    if isinstance(err, pickle.UnpicklingError):
        return "not a checkpoint, or one holding more than tensors and plain values, which is never unpickled here"
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def resume_problem(path: str | Path) -> str | None:
    """Why training cannot resume from `path` (truncated, not a checkpoint, no training state), or None.

    Reads the checkpoint's index only (memory-mapped): cheap even for large checkpoints."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        return f"unreadable, truncated or not a checkpoint ({why_unloadable(err, 120)})"
    expected = ("state_dict", "loops", "epoch")
    missing = [key for key in expected if key not in checkpoint] if isinstance(checkpoint, dict) else expected
    return f"not a training checkpoint (no {', '.join(missing)})" if missing else None
