"""`python -m cats_model.bench`: run the measurements, print a table, write JSON."""

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

import cats_model.bench
from cats_model.bench.accelerator import bench_accelerator
from cats_model.bench.framework import bench_framework
from cats_model.bench.input import bench_input
from cats_model.bench.table import markdown_table
from cats_model.data import CACHE_DIR
from cats_model.data.datamodule import CatBreedsDataModule
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.paths import configured_path
from cats_model.system import available_cpus, default_device, default_num_workers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cats_model.bench",
        description=cats_model.bench.__doc__.split("\n")[0],
        epilog="Other sections: `python -m cats_model.bench inference CKPT`, `... serve MODEL` and `... cat-head` "
        "(each with --help).",
    )
    parser.add_argument(
        "--root", type=Path, help="an Oxford-IIIT Pet tree (default: a synthetic one with photo-sized JPEGs)"
    )
    parser.add_argument(
        "--images-per-class", type=int, default=200, help="of the synthetic tree (Oxford has about 200)"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the input per measurement")
    parser.add_argument(
        "--train-model", default="mobilenet_v3_small", help="backbone for the Trainer comparison"
    )
    parser.add_argument("--train-size", type=int, default=128, help="image size for the Trainer comparison")
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument(
        "--gpu-steps", type=int, default=100, help="synthetic-input steps per GPU measurement"
    )
    parser.add_argument("--json", type=Path, default=Path("bench.json"))
    return parser.parse_args(argv)


# Sections run on their own, with arguments of their own: `python -m cats_model.bench inference CKPT`.
SECTIONS = {
    "inference": "cats_model.bench.inference",
    "serve": "cats_model.bench.serving",
    "cat-head": "cats_model.bench.cat_head",
}


def main(argv: list[str] | None = None, accelerator_section: bool | None = None) -> dict:
    """Run the benchmark; the accelerator section by default only where there is a GPU."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SECTIONS:
        return importlib.import_module(SECTIONS[argv[0]]).main(argv[1:])
    args = parse_args(argv)
    device = default_device()
    spec = SyntheticSpec(
        trainval_per_class=args.images_per_class, test_per_class=4, dog_breeds=0, min_size=300, max_size=500
    )
    bench_data = configured_path("data_dir") / f"synthetic-pet-bench-{args.images_per_class}"
    root = args.root or ensure_synthetic(bench_data, spec)
    dm = CatBreedsDataModule(
        str(root), image_size=args.image_size, batch_size=args.batch_size, num_workers=args.workers
    )
    earlier_caches = set((root / CACHE_DIR).glob("*.npy"))
    started = time.perf_counter()
    dm.setup()  # like the first run on a dataset: scans the images and builds the decoded cache
    workdir = args.json.parent.absolute() / "bench-runs"
    machine = {
        "platform": platform.platform(),
        "cpus": available_cpus(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "train_images": len(dm.splits.train),
    }
    results = {
        "machine": machine,
        "setup_s": time.perf_counter() - started,
        "cache_built": bool(set((root / CACHE_DIR).glob("*.npy")) - earlier_caches),
        "input_pipeline": bench_input(dm, args.epochs, device),
        "framework": bench_framework(
            args.train_steps, args.train_size, min(args.batch_size, 32), args.train_model, device, workdir
        ),
    }
    if accelerator_section is None:
        accelerator_section = device.type == "cuda"
    if accelerator_section:
        results["accelerator"] = bench_accelerator(dm, device, args.gpu_steps, 3, workdir)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    return results


def format_results(results: dict) -> str:
    i, f, m = results["input_pipeline"], results["framework"], results["machine"]
    heading = (
        f"machine: {m['device']}, {m['cpus']} CPUs, torch {m['torch']}; batch {m['batch_size']}, "
        f"{m['workers']} workers, {m['image_size']} px, {m['train_images']} training images"
    )
    rows = [
        [
            "input pipeline, images/s (vs plain torchvision)",
            f"{i['project_images_per_sec']:.0f}",
            f"{i['baseline_images_per_sec']:.0f}",
            f"{i['ratio']:.2f}x",
        ],
        [
            f"training, images/s ({f['model']} {f['image_size']} px; Trainer vs hand loop)",
            f"{f['trainer_images_per_sec']:.1f}",
            f"{f['hand_loop_images_per_sec']:.1f}",
            f"{f['ratio']:.3f}",
        ],
    ]
    if "accelerator" in results:
        a = results["accelerator"]
        rows += [
            [
                f"{a['model']} {a['image_size']} px on {a['device']}, images/s ({a['precision']} vs 32-true)",
                f"{a['defaults_images_per_sec']:.0f}",
                f"{a['fp32_images_per_sec']:.0f}",
                f"{a['speedup']:.2f}x",
            ],
            [
                "arithmetic, TFLOP/s (vs peak)",
                f"{a['achieved_tflops']:.1f}",
                f"{a['peak_tflops']}" if a["peak_tflops"] else "unknown",
                f"{a['fraction_of_peak'] or 0:.2f}",
            ],
            [
                "a whole epoch of real data vs synthetic input, images/s",
                f"{a['epoch_images_per_sec']:.0f}",
                f"{a['defaults_images_per_sec']:.0f}",
                f"{a['epoch_vs_synthetic']:.2f}",
            ],
        ]
    cache = (
        "image scan, decoded cache built"
        if results["cache_built"]
        else "decoded cache and its list of unreadable images found from an earlier run"
    )
    footer = f"(data set up in {results['setup_s']:.1f} s: {cache})"
    return "\n".join(
        [heading, *markdown_table(["measurement", "project", "reference", "ratio"], rows), footer]
    )
