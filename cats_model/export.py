"""Export a checkpoint to ONNX: `python -m cats_model.export CKPT --out model.onnx [--int8]`.

Writes the model (dynamic batch axis) and a sidecar JSON (class names, image size, mean, std, the file's
sha256), but only after onnxruntime reproduces PyTorch's logits; with --int8, only after the quantized model
passes the accuracy guard (see cats_model.quantize). A failure writes nothing.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from cats_model.atomic import atomic_path
from cats_model.errors import UserError, exit_on_user_error
from cats_model.inference import (
    ONNX_CAT_OUTPUT,
    ONNX_INPUT,
    ONNX_OUTPUT,
    TorchModel,
    file_sha256,
    resize_side,
    sidecar_path,
)
from cats_model.quantize import Int8Options, guard_sets, quantize

# float32 rounding grows with the logits' size (a trained model's logits on noise reach 100 and more), so the
# allowed difference is relative to the largest logit, and absolute below 1.
TOLERANCE = 1e-4


def preprocessing(model: TorchModel) -> dict:
    info = model.info
    described = {
        **info.as_dict(),
        "resize": resize_side(info),
        "crop": "center",
        "input": "float32 RGB, NCHW, scaled to [0, 1], then (x - mean) / std",
        "output": "logits, one per class name",
    }
    if info.cat_threshold is not None:
        described["cat_output"] = (
            f"{ONNX_CAT_OUTPUT}: P(cat) is its sigmoid; a cat when P(cat) >= cat_threshold"
        )
    return described


class BothAnswers(torch.nn.Module):
    """A classifier with a cat-or-not head as ONNX sees it: two outputs, the breed logits and the cat logit."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier.heads(images)


def onnx_graph(model: TorchModel) -> tuple[torch.nn.Module, list[str]]:
    """The module to export and the names of its outputs: the breed logits, and the cat logit where there is one."""
    module = model.module.cpu()
    if model.info.cat_threshold is None:
        return module, [ONNX_OUTPUT]
    return BothAnswers(module).eval(), [ONNX_OUTPUT, ONNX_CAT_OUTPUT]


def check_out(out: Path) -> Path:
    """`out`, once a file could be written beside it: a folder that cannot take it fails before the export."""
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out {out}: name a .onnx file (its .json is written beside it)")
    if out.is_dir() or sidecar_path(out).is_dir():
        raise UserError(f"--out {out}: a folder is in the way; name a .onnx file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        raise UserError(
            f"--out {out}: cannot write in {out.parent} ({err.strerror}): choose another folder"
        ) from None
    return out


def export_fp32(model: TorchModel, target: Path, opset: int) -> dict:
    """Write the fp32 ONNX of `model` to `target`; return the largest logit difference to PyTorch and the largest
    logit, after checking the one against the other."""
    import onnxruntime

    (module, outputs), size = onnx_graph(model), model.info.image_size
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module,
        (torch.randn(2, 3, size, size),),
        str(target),
        input_names=[ONNX_INPUT],
        output_names=outputs,
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        external_data=False,  # one self-contained file, so that the atomic rename moves everything
        verbose=False,  # no progress line per export stage
    )
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    worst = scale = 0.0
    for count in (1, 5):  # two sizes: the batch axis really is dynamic
        images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(count))
        with torch.no_grad():
            expected = module(images)
        expected = expected if isinstance(expected, tuple) else (expected,)  # one tensor per output
        for want, got in zip(expected, session.run(outputs, {ONNX_INPUT: images.numpy()})):
            worst = max(worst, float(np.abs(got - want.numpy()).max()))
            scale = max(scale, float(np.abs(want.numpy()).max()))
    allowed = TOLERANCE * max(1.0, scale)
    if not worst <= allowed:
        raise UserError(
            f"ONNX parity check failed: logits differ from PyTorch by up to {worst:.2e} (> {allowed:.2e}, "
            f"{TOLERANCE} of the largest logit {scale:.3g}); nothing written"
        )
    return {"max_abs_logit_diff": worst, "max_abs_logit": scale}


def export(checkpoint: str, out: str | Path, opset: int = 18, int8: Int8Options | None = None) -> dict:
    """Write `out` (.onnx) and its .json: the fp32 model, or with `int8` the quantized one. Returns the sidecar."""
    out = check_out(Path(out))
    model = TorchModel(Path(checkpoint), torch.device("cpu"))
    sets = (
        guard_sets(model, int8) if int8 is not None else None
    )  # a folder without images fails before the export
    with tempfile.TemporaryDirectory() as work:
        written = Path(work) / "fp32.onnx"
        sidecar = {**preprocessing(model), **export_fp32(model, written, opset)}
        if int8 is not None:
            fp32, written = written, Path(work) / "int8.onnx"
            sidecar["int8"] = quantize(model, fp32, written, sets, int8)
        # The sidecar names the model file it describes: a stale one beside a newer model is refused on load.
        sidecar.update(sha256=file_sha256(written), bytes=written.stat().st_size)
        # Both written whole beside their targets first, then renamed, the sidecar first: a failed write (a full
        # disk) leaves the previous pair as it was.
        with atomic_path(out) as model_tmp, atomic_path(sidecar_path(out)) as sidecar_tmp:
            shutil.copyfile(written, model_tmp)
            sidecar_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cats_model.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--out", required=True, type=Path, help="the .onnx file to write (its .json beside it)"
    )
    parser.add_argument("--opset", type=int, default=18)
    quant = parser.add_argument_group("int8 (static quantization, QDQ, per-channel weights)")
    quant.add_argument(
        "--int8", action="store_true", help="write the int8 model, if it passes the accuracy guard"
    )
    quant.add_argument(
        "--calibration", type=Path,
        help="a folder of images to calibrate on (default: the training split of the run's own dataset)",
    )  # fmt: skip
    quant.add_argument(
        "--eval", type=Path,
        help="a folder of <class name>/<image> to guard accuracy on (default: the run's validation split)",
    )  # fmt: skip
    quant.add_argument("--calibration-images", type=int, default=300, help="how many images calibrate")
    quant.add_argument(
        "--min-agreement", type=float, default=0.98, help="refuse when int8 and fp32 top-1 agree less often"
    )
    quant.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.01,
        help="refuse when int8 top-1 accuracy is lower by more",
    )
    args = parser.parse_args(argv)
    int8 = (
        Int8Options(
            args.calibration, args.eval, args.calibration_images, args.min_agreement, args.max_accuracy_drop
        )
        if args.int8
        else None
    )
    with exit_on_user_error():
        sidecar = export(args.checkpoint, args.out, args.opset, int8)
    summary = f"max |logit difference| to PyTorch {sidecar['max_abs_logit_diff']:.1e}"
    if "int8" in sidecar:
        q = sidecar["int8"]
        summary = (
            f"int8: top-1 {q['accuracy_int8']:.4f} vs fp32 {q['accuracy_fp32']:.4f}, agreement {q['agreement']:.4f} "
            f"on {q['eval']['images']} images; {q['fp32_bytes'] / 1e6:.1f} MB -> {q['int8_bytes'] / 1e6:.1f} MB"
        )
        if "cat_agreement" in q:
            summary += f"; cat-or-not agreement {q['cat_agreement']:.4f} on {q['cat_images']} images"
    print(f"wrote {args.out} and {sidecar_path(args.out)} ({summary})")


if __name__ == "__main__":
    main()
