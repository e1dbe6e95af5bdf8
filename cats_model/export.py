"""Export a checkpoint to ONNX: `python -m cats_model.export CKPT --out model.onnx`.

Writes the model (dynamic batch axis) and a sidecar JSON with the pre-processing (class names, image size,
mean, std), but only after onnxruntime reproduces PyTorch's logits: a failure writes nothing.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cats_model.atomic import atomic_path, atomic_write_text
from cats_model.checkpoint import load_classifier
from cats_model.data.transforms import EVAL_CROP_RATIO
from cats_model.errors import UserError, exit_on_user_error

TOLERANCE = 1e-4


def preprocessing(model) -> dict:
    hp = model.hparams
    return {
        "class_names": model.class_names,
        "backbone": hp.backbone,
        "image_size": hp.image_size,
        "resize": round(hp.image_size / EVAL_CROP_RATIO),
        "crop": "center",
        "mean": list(hp.mean),
        "std": list(hp.std),
        "input": "float32 RGB, NCHW, scaled to [0, 1], then (x - mean) / std",
        "output": "logits, one per class name",
    }


def export(checkpoint: str, out: str | Path, opset: int = 18) -> dict:
    """Write `out` (.onnx) and `out` with .json; return the parity report."""
    import onnxruntime

    out = Path(out)
    model = load_classifier(checkpoint).float()
    size = model.hparams.image_size
    with atomic_path(out) as tmp:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            model, (torch.randn(2, 3, size, size),), str(tmp), input_names=["image"], output_names=["logits"],
            dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
            external_data=False,  # one self-contained file, so that the atomic rename moves everything
        )  # fmt: skip
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch in (1, 5):  # two sizes: the batch axis really is dynamic
            images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                expected = model(images).numpy()
            (actual,) = session.run(None, {"image": images.numpy()})
            worst = max(worst, float(np.abs(actual - expected).max()))
        if not worst <= TOLERANCE:
            raise UserError(
                f"ONNX parity check failed: logits differ from PyTorch by up to {worst:.2e} (> {TOLERANCE}); nothing written"
            )
        atomic_write_text(out.with_suffix(".json"), json.dumps(preprocessing(model), indent=2) + "\n")
    return {"onnx": str(out), "preprocessing": str(out.with_suffix(".json")), "max_abs_logit_diff": worst}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cats_model.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--out", required=True, type=Path, help="the .onnx file to write (its .json beside it)"
    )
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args(argv)
    with exit_on_user_error(exit_code=1):
        report = export(args.checkpoint, args.out, args.opset)
    print(
        f"wrote {report['onnx']} and {report['preprocessing']} (max |logit difference| {report['max_abs_logit_diff']:.1e})"
    )


if __name__ == "__main__":
    main()
