"""Benchmark, side by side in one run: `python -m cats_model.bench [--root DIR] [--json FILE]`.

1. input pipeline: the project's training loader (decoded cache + batch augmentation) against a plain
   torchvision loader (PIL decode, RandomResizedCrop, ToTensor, Normalize) over the same JPEGs, with the same
   batch size and worker count;
2. training: the project's Trainer against a hand-written PyTorch loop, same model, same batches;
3. on a GPU: the default model at 224 px with the project's GPU defaults against plain fp32, the fraction of
   the GPU's peak arithmetic reached, and a real epoch against the synthetic-input rate.
Every figure is a ratio of two measurements taken in this run, alternated to cancel drift.
"""

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from cats_model.callbacks import TrainSpeed
from cats_model.data.datamodule import CatBreedsDataModule
from cats_model.data.synthetic import SyntheticSpec, ensure_synthetic
from cats_model.model.classifier import CatClassifier
from cats_model.system import available_cpus, default_num_workers

# Dense fp16/bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {
    "T4": 65,
    "L4": 121,
    "A10G": 70,
    "L40S": 362,
    "A100": 312,
    "H100": 989,
    "H200": 989,
    "B200": 2250,
}


class PlainTorchvision(Dataset):
    """The usual baseline: decode the JPEG with PIL, then torchvision's classic transforms, per item."""

    def __init__(self, samples, image_size):
        from torchvision import transforms as T

        self.samples = samples
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(image_size),
                T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def images_per_sec(loader, finish, epochs: int) -> float:
    """Full passes over `loader` (the first one warms the workers up), each batch made model-ready by `finish`."""
    for batch, _ in loader:
        finish(batch)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch, _ in loader:
            count += len(finish(batch))
    return count / (time.perf_counter() - start)


def bench_input(dm: CatBreedsDataModule, epochs: int, device: torch.device) -> dict:
    project = dm.train_dataloader()
    baseline = DataLoader(
        PlainTorchvision(dm.splits.train, dm.image_size), batch_size=dm.batch_size, shuffle=True, drop_last=True,
        num_workers=dm.num_workers, persistent_workers=dm.num_workers > 0, pin_memory=device.type == "cuda",
    )  # fmt: skip

    def finish_project(batch):
        return dm.finish_batch(batch.to(device, non_blocking=True), train=True)

    def finish_baseline(batch):
        return batch.to(device, non_blocking=True)

    rates = {"project": [], "baseline": []}
    for _ in range(2):  # alternated, so that a slow spell of the machine hits both
        rates["baseline"].append(images_per_sec(baseline, finish_baseline, epochs))
        rates["project"].append(images_per_sec(project, finish_project, epochs))
    project_rate, baseline_rate = (sum(r) / len(r) for r in (rates["project"], rates["baseline"]))
    return {
        "project_images_per_sec": project_rate,
        "baseline_images_per_sec": baseline_rate,
        "ratio": project_rate / baseline_rate,
    }


def hand_loop(model: CatClassifier, batches: list, device: torch.device, warmup: int) -> float:
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    for step, (images, labels) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(b[1]) for b in batches[warmup:]) / (time.perf_counter() - start)


class _StepClock(L.Callback):
    """Times the same steps the hand loop times: from the first step after warm-up to the last."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.images += len(batch[1])
            self.end = time.perf_counter()


def trainer_loop(
    model: CatClassifier, batches: list, device: torch.device, warmup: int, workdir: Path
) -> float:
    from cats_model.loggers import ResumableCSVLogger

    clock = _StepClock(warmup)
    trainer = L.Trainer(
        accelerator=device.type, devices=1, max_epochs=1, precision="32-true", default_root_dir=workdir,
        logger=ResumableCSVLogger(workdir), callbacks=[clock, TrainSpeed()], enable_checkpointing=False,
        limit_val_batches=0, num_sanity_val_steps=0, enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    return clock.images / (clock.end - clock.start)


def bench_framework(
    steps: int, image_size: int, batch_size: int, backbone: str, device: torch.device, workdir: Path
) -> dict:
    torch.manual_seed(0)
    model = CatClassifier(class_names=[str(i) for i in range(12)], backbone=backbone, pretrained=False,
                          image_size=image_size, optimizer={"name": "adamw", "lr": 1e-3}, scheduler={"name": "constant"})  # fmt: skip
    batches = [
        (torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, 12, (batch_size,)))
        for _ in range(steps)
    ]
    warmup = max(2, steps // 5)
    rates = {"hand": [], "trainer": []}
    for _ in range(2):
        rates["hand"].append(hand_loop(copy.deepcopy(model), batches, device, warmup))
        rates["trainer"].append(trainer_loop(copy.deepcopy(model), batches, device, warmup, workdir))
    hand, trainer = (sum(r) / len(r) for r in (rates["hand"], rates["trainer"]))
    return {
        "model": backbone,
        "image_size": image_size,
        "hand_loop_images_per_sec": hand,
        "trainer_images_per_sec": trainer,
        "ratio": trainer / hand,
    }


def bench_gpu(dm: CatBreedsDataModule, steps: int, batch_size: int, workdir: Path) -> dict:
    """resnet18 at 224 px: project defaults (mixed precision, channels_last, cuDNN benchmark) against fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    model = CatClassifier(
        class_names=dm.class_names, backbone="resnet18", pretrained=False, image_size=224
    ).to(device)
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    labels = torch.randint(0, len(dm.class_names), (batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(images), labels).backward()
    flops_per_step = counter.get_total_flops()

    def rate(mixed: bool) -> float:
        net = copy.deepcopy(model).train()
        x = images.contiguous(memory_format=torch.channels_last) if mixed else images
        if mixed:
            net = net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(enabled=mixed and dtype == torch.float16)
        for step in range(steps):
            if step == steps // 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype, enabled=mixed):
                loss = torch.nn.functional.cross_entropy(net(x), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        torch.cuda.synchronize()
        return (steps - steps // 5) * batch_size / (time.perf_counter() - start)

    fp32, mixed = rate(False), rate(True)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    achieved = mixed / batch_size * flops_per_step / 1e12
    # A real epoch through the project's Trainer and loader, against the synthetic-input rate just measured.
    speed = TrainSpeed()
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=2, precision="bf16-mixed" if dtype == torch.bfloat16 else "16-mixed",
                        benchmark=True, logger=False, callbacks=[speed], enable_checkpointing=False, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, default_root_dir=workdir)  # fmt: skip
    trainer.fit(copy.deepcopy(model), datamodule=dm)
    return {
        "gpu": name, "fp32_images_per_sec": fp32, "defaults_images_per_sec": mixed, "speedup": mixed / fp32,
        "achieved_tflops": achieved, "peak_tflops": peak, "fraction_of_peak": achieved / peak if peak else None,
        "epoch_images_per_sec": speed.images_per_sec, "epoch_vs_synthetic": speed.images_per_sec / mixed,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m cats_model.bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, help="an Oxford-IIIT Pet tree (default: a synthetic one with photo-sized JPEGs)"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the input per measurement")
    parser.add_argument(
        "--train-model", default="mobilenet_v3_small", help="backbone for the Trainer comparison"
    )
    parser.add_argument("--train-size", type=int, default=128, help="image size for the Trainer comparison")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--json", type=Path, default=Path("bench.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = args.root or ensure_synthetic(
        Path(os.environ.get("CATS_MODEL_DATA_DIR", "data")) / "synthetic-pet-bench",
        SyntheticSpec(trainval_per_class=40, test_per_class=4, dog_breeds=0, min_size=300, max_size=500),
    )
    dm = CatBreedsDataModule(
        str(root), image_size=args.image_size, batch_size=args.batch_size, num_workers=args.workers
    )
    started = time.perf_counter()
    dm.setup()  # builds the decoded cache once, like the first run on a dataset
    results = {
        "machine": {"platform": platform.platform(), "cpus": available_cpus(), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "workers": args.workers, "batch_size": args.batch_size, "image_size": args.image_size},
        "cache_build_s": time.perf_counter() - started,
        "input_pipeline": bench_input(dm, args.epochs, device),
        "framework": bench_framework(args.train_steps, args.train_size, min(args.batch_size, 32), args.train_model, device, args.json.parent.absolute() / "bench-runs"),
    }  # fmt: skip
    if device.type == "cuda":
        results["gpu"] = bench_gpu(dm, 50, 128, args.json.parent.absolute() / "bench-runs")
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results(results))
    return results


def format_results(results: dict) -> str:
    i, f = results["input_pipeline"], results["framework"]
    m = results["machine"]
    lines = [
        f"machine: {m['device']}, {m['cpus']} CPUs, torch {m['torch']}; batch {m['batch_size']}, {m['workers']} workers, {m['image_size']} px",
        "| measurement | project | reference | ratio |",
        "|---|---|---|---|",
        f"| input pipeline, images/s (vs plain torchvision) | {i['project_images_per_sec']:.0f} | {i['baseline_images_per_sec']:.0f} | {i['ratio']:.2f}x |",
        f"| training, images/s ({f['model']} {f['image_size']} px; Trainer vs hand loop) | {f['trainer_images_per_sec']:.1f} | {f['hand_loop_images_per_sec']:.1f} | {f['ratio']:.3f} |",
    ]
    if "gpu" in results:
        g = results["gpu"]
        lines += [
            f"| resnet18 224 px on {g['gpu']}, images/s (defaults vs fp32) | {g['defaults_images_per_sec']:.0f} | {g['fp32_images_per_sec']:.0f} | {g['speedup']:.2f}x |",
            f"| arithmetic, TFLOP/s (vs peak) | {g['achieved_tflops']:.1f} | {g['peak_tflops']} | {g['fraction_of_peak'] or 0:.2f} |",
            f"| a real epoch vs synthetic input, images/s | {g['epoch_images_per_sec']:.0f} | {g['defaults_images_per_sec']:.0f} | {g['epoch_vs_synthetic']:.2f} |",
        ]
    lines.append(f"(decoded cache built once in {results['cache_build_s']:.1f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
