"""The project's GPU defaults measured on the GPU: against plain fp32, against the GPU's peak arithmetic, and a
whole epoch of real data (loader, transfer, augmentation on the GPU) against synthetic input already there.

Written for any device so that a CPU test can run it end to end; on a CPU the defaults are plain fp32."""

from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from cats_model.callbacks import TrainSpeed, synced_now
from cats_model.config import compose_train_config
from cats_model.data.datamodule import ImageDataModule
from cats_model.model.classifier import CatClassifier
from cats_model.train import allow_tf32, trainer_arguments

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


def peak_tflops(device_name: str) -> float | None:
    """The peak of the GPU so named, by the longest name in it: an "NVIDIA L40S" is no "L4"."""
    names = [name for name in PEAK_TFLOPS if name in device_name]
    return PEAK_TFLOPS[max(names, key=len)] if names else None


class StepClock(L.Callback):
    """Images per second over the steps after `warmup` (cuDNN's algorithm search, allocator growth), the
    device synchronised only at the two ends, so that it runs ahead of Python in between as in training."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.images = warmup, 0, 0
        self.start = self.end = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        if self.steps == self.warmup:
            self.start = synced_now(pl_module.device)
        elif self.steps > self.warmup:
            self.images += len(batch[1])

    def on_train_end(self, trainer, pl_module):
        self.end = synced_now(pl_module.device)

    @property
    def images_per_sec(self) -> float:
        return self.images / (self.end - self.start)


def project_defaults(device: torch.device, workdir: Path) -> tuple[dict, dict]:
    """The default model's settings (backbone, optimizer, scheduler), and the Trainer settings the configs give
    this device (trainer=gpu on CUDA, TF32 allowed there as in training)."""
    cfg = compose_train_config(["trainer=gpu" if device.type == "cuda" else "trainer=cpu"], run_dir=workdir)
    trainer_args = trainer_arguments(cfg.trainer)
    allow_tf32(trainer_args)
    model = {
        "backbone": cfg.model.backbone,
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True),
    }
    return model, {"precision": trainer_args["precision"], "benchmark": trainer_args.get("benchmark")}


def fit(
    model: CatClassifier, device: torch.device, settings: dict, epochs: int, workdir: Path, callbacks, **data
):
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_epochs=epochs,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=workdir,
        **settings,
    )
    trainer.fit(model, **data)


def bench_accelerator(
    dm: ImageDataModule, device: torch.device, steps: int, epochs: int, workdir: Path
) -> dict:
    model_settings, defaults = project_defaults(device, workdir)
    backbone, size, batch, classes = (
        model_settings["backbone"],
        dm.image_size,
        dm.batch_size,
        len(dm.class_names),
    )

    def new_model(channels_last: bool | None) -> CatClassifier:  # None: the project's default for the device
        torch.manual_seed(0)
        return CatClassifier(
            class_names=dm.class_names,
            pretrained=False,
            image_size=size,
            channels_last=channels_last,
            mean=list(dm.mean),
            std=list(dm.std),
            **model_settings,
        )

    # Synthetic input: a few model-ready batches, already on the device, served over and over.
    distinct = [
        (
            torch.randn(batch, 3, size, size, device=device),
            torch.randint(0, classes, (batch,), device=device),
        )
        for _ in range(4)
    ]
    synthetic = DataLoader([distinct[i % 4] for i in range(steps)], batch_size=None)
    warmup = max(2, steps // 5)

    def synthetic_rate(settings: dict, channels_last: bool | None) -> float:
        clock = StepClock(warmup)
        fit(new_model(channels_last), device, settings, 1, workdir, [clock], train_dataloaders=synthetic)
        return clock.images_per_sec

    fp32 = synthetic_rate({"precision": "32-true", "benchmark": False}, channels_last=False)
    with_defaults = synthetic_rate(defaults, channels_last=None)
    # A whole epoch of the real data through the project's loader (its last, the workers warm), same settings.
    speed = TrainSpeed()
    fit(new_model(None), device, defaults, epochs, workdir, [speed], datamodule=dm)
    epoch = speed.last_epoch_images_per_sec

    model = new_model(None).to(device)
    with FlopCounterMode(display=False) as counter:  # forward and backward of one image, as trained
        images = torch.randn(2, 3, size, size, device=device)
        torch.nn.functional.cross_entropy(
            model(images), torch.zeros(2, dtype=torch.long, device=device)
        ).backward()
    tflops = with_defaults * counter.get_total_flops() / 2 / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name)
    return {
        "device": name,
        "model": backbone,
        "image_size": size,
        "batch_size": batch,
        **defaults,
        "fp32_images_per_sec": fp32,
        "defaults_images_per_sec": with_defaults,
        "speedup": with_defaults / fp32,
        "achieved_tflops": tflops,
        "peak_tflops": peak,
        "fraction_of_peak": tflops / peak if peak else None,
        "epoch_images_per_sec": epoch,
        "epoch_vs_synthetic": epoch / with_defaults,
    }
