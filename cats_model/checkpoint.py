"""Loading a trained checkpoint on its own: no config needed, no pickle executed."""

from pathlib import Path

import torch

from cats_model.errors import UserError
from cats_model.model.classifier import CatClassifier


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        reason = " ".join(str(err).split())[:300]
        raise UserError(
            f"{path} is not a usable tiny-cats-model checkpoint ({type(err).__name__}: {reason})"
        ) from err
    return model.eval()


def resume_problem(path: str | Path) -> str | None:
    """Why training cannot resume from `path` (truncated, not a checkpoint, no training state), or None.

    Reads the checkpoint's index only (memory-mapped): cheap even for large checkpoints."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        return f"unreadable, truncated or not a checkpoint ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
    expected = ("state_dict", "loops", "epoch")
    missing = [key for key in expected if key not in checkpoint] if isinstance(checkpoint, dict) else expected
    return f"not a training checkpoint (no {', '.join(missing)})" if missing else None
