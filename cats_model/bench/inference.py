"""Inference on this machine's CPU: `python -m cats_model.bench inference MODEL.ckpt [--json FILE]`.

Side by side in one run, for PyTorch eager fp32, PyTorch channels_last, ONNX fp32 and ONNX int8 (exported and
quantized here, as `python -m cats_model.export` does): images/s at batch 32, latency p50/p99 at batch 1, file
size, and top-1 agreement with PyTorch eager (and accuracy) on the run's validation split's cats; for a model with
a cat-or-not head, agreement with eager on that answer too, over the whole split. PyTorch and
onnxruntime get the same number of threads. The variants take turns, round after round, so that a slow spell
of a shared machine hits all of them; each figure is the median over the rounds.
"""

import argparse
import copy
import io
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cats_model.bench.table import markdown_table
from cats_model.cat_or_not import is_cat
from cats_model.errors import exit_on_user_error
from cats_model.export import export_fp32
from cats_model.inference import OnnxModel, TorchModel, read_images
from cats_model.quantize import Calibration, Int8Options, guard_sets, quantize_onnx
from cats_model.system import available_cpus

SETTLE_S = 0.3
# A batch of prepared images -> breed logits or probabilities, and P(cat) or the cat logit (None: no cat head)
Predict = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray | None]]


def pytorch(module: torch.nn.Module, channels_last: bool) -> Predict:
    if channels_last:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def run(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            breeds, cat = module.heads(images)
            return breeds.numpy(), None if cat is None else cat.sigmoid().numpy()

    return run


def weights_bytes(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def timed(run: Predict, images: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_inference(
    checkpoint: Path,
    work: Path,
    options: Int8Options,
    threads: int,
    batch: int,
    rounds: int,
    latency_runs: int,
) -> dict:
    model = TorchModel(checkpoint, torch.device("cpu"))
    sets = guard_sets(model, options)
    fp32_path, int8_path = work / "fp32.onnx", work / "int8.onnx"
    export_fp32(model, fp32_path, opset=18)
    quantize_onnx(fp32_path, int8_path, Calibration(list(sets.calibration), model.info))
    onnx = {
        kind: OnnxModel(path, model.info, threads=threads)
        for kind, path in (("fp32", fp32_path), ("int8", int8_path))
    }
    variants: dict[str, tuple[Predict, int]] = {
        "pytorch eager fp32": (pytorch(model.module, channels_last=False), weights_bytes(model.module)),
        "pytorch channels_last fp32": (
            pytorch(model.module, channels_last=True),
            weights_bytes(model.module),
        ),
        "onnx fp32": (onnx["fp32"].answers, fp32_path.stat().st_size),
        "onnx int8": (onnx["int8"].answers, int8_path.stat().st_size),
    }

    paths = [path for path, _ in sets.labelled]
    labels = dict(sets.labelled)
    read, images, _ = read_images(paths, model.info)
    truth = np.array([labels[path] for path in read])
    cats = is_cat(truth)  # breeds are scored on the cats, the cat-or-not answer on every image
    answers = {name: run(images) for name, (run, _) in variants.items()}  # also warms each up
    top1 = {name: breeds.argmax(axis=1)[cats] for name, (breeds, _) in answers.items()}
    threshold = model.info.cat_threshold
    said_cat = {name: None if cat is None else cat >= threshold for name, (_, cat) in answers.items()}
    size = model.info.image_size
    full = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    single = full[:1]
    rates = {name: [] for name in variants}
    latencies = {name: [] for name in variants}
    for _ in range(rounds):  # taking turns: drift of the machine is shared by all
        for name, (run, _) in variants.items():
            # The previous variant's threads (OpenMP's, onnxruntime's) spin a while after its last call: on few
            # cores that would be charged to this one (int8 measured 757 images/s right after PyTorch, 931 after
            # a pause, on 2 cores).
            time.sleep(SETTLE_S)
            rates[name].append(batch / min(timed(run, full, 2)))
            latencies[name] += timed(run, single, latency_runs)
    eager = "pytorch eager fp32"
    results = {}
    for name, (_, file_bytes) in variants.items():
        milliseconds = np.array(latencies[name]) * 1000
        results[name] = {
            "images_per_sec": statistics.median(rates[name]),
            "p50_ms": float(np.percentile(milliseconds, 50)),
            "p99_ms": float(np.percentile(milliseconds, 99)),
            "bytes": file_bytes,
            "agreement": float((top1[name] == top1[eager]).mean()),
            "accuracy": float((top1[name] == truth[cats]).mean()),
        }
        if threshold is not None:
            results[name]["cat_agreement"] = float((said_cat[name] == said_cat[eager]).mean())
    for row in results.values():
        row["speedup"] = row["images_per_sec"] / results[eager]["images_per_sec"]
    return {
        "machine": {"platform": platform.platform(), "cpus": available_cpus(), "torch": torch.__version__},
        "model": {"checkpoint": str(checkpoint), "backbone": model.info.backbone, "image_size": size},
        "threads": threads,
        "batch_size": batch,
        "rounds": rounds,
        "eval": {"source": sets.eval_source, "images": int(cats.sum()), "cat_or_not_images": len(read)},
        "calibration": {"source": sets.calibration_source, "images": len(sets.calibration)},
        "variants": results,
    }


def format_results(results: dict) -> str:
    m, threads = results["model"], results["threads"]
    cat_or_not = all("cat_agreement" in r for r in results["variants"].values())
    heading = (
        f"{m['backbone']} at {m['image_size']} px on {results['machine']['cpus']} CPUs; PyTorch and onnxruntime on "
        f"{threads} thread{'s' if threads != 1 else ''} each; medians of {results['rounds']} interleaved rounds; "
        f"agreement and accuracy on {results['eval']['images']} images of {results['eval']['source']}"
    )
    if cat_or_not:
        heading += f" (cat-or-not agreement on {results['eval']['cat_or_not_images']}, its not-cats included)"
    header = [
        "variant",
        f"images/s (batch {results['batch_size']})",
        "vs eager",
        "p50 ms (batch 1)",
        "p99 ms",
        "size MB",
        "top-1 agreement",
        "top-1 accuracy",
        *(["cat-or-not agreement"] if cat_or_not else []),
    ]
    rows = [
        [
            name,
            f"{r['images_per_sec']:.0f}",
            f"{r['speedup']:.2f}x",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['bytes'] / 1e6:.1f}",
            f"{r['agreement']:.3f}",
            f"{r['accuracy']:.3f}",
            *([f"{r['cat_agreement']:.3f}"] if cat_or_not else []),
        ]
        for name, r in results["variants"].items()
    ]
    return "\n".join([heading, *markdown_table(header, rows)])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m cats_model.bench inference", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument(
        "--calibration", type=Path, help="images to calibrate int8 on (default: the run's training split)"
    )
    parser.add_argument(
        "--eval", type=Path, help="<class name>/<image> to measure agreement on (default: validation split)"
    )
    parser.add_argument(
        "--threads", type=int, default=available_cpus(), help="for PyTorch and onnxruntime alike"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=20, help="batch-1 calls per variant and round")
    parser.add_argument("--json", type=Path, default=Path("bench-inference.json"))
    args = parser.parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # onnxruntime's sessions get the same number
    try:
        with exit_on_user_error(), tempfile.TemporaryDirectory() as work:
            results = bench_inference(
                args.checkpoint, Path(work), Int8Options(args.calibration, args.eval), args.threads,
                args.batch_size, args.rounds, args.latency_runs,
            )  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    return results
