"""Framework overhead: the project's Trainer against a hand-written PyTorch loop, same model, same batches.

The two take turns step by step: right after each Trainer step, the hand loop runs its step on its own copy of
the model and the same batch. Both are so timed over the same seconds of the machine; a shared CPU's rate
drifts by 10% and more within seconds, which timing one loop after the other mistook for overhead.
"""

import copy
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from cats_model.callbacks import TrainSpeed, synced_now
from cats_model.loggers import ResumableCSVLogger
from cats_model.model.classifier import CatClassifier
from cats_model.noise import silence_library_noise

HAND_LOOP_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.0}


class InterleavedHandLoop(L.Callback):
    """A plain PyTorch training step after each of the Trainer's, with the seconds of each side added up."""

    def __init__(self, model: torch.nn.Module, warmup: int, clock=synced_now):
        self.model, self.warmup, self.clock = model, warmup, clock  # clock(device) -> seconds
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.optimizer = None
        self.trainer_seconds = self.hand_seconds = 0.0
        self.images = 0
        self._resumed = None  # when the Trainer got the machine back after the last hand step

    def on_train_start(self, trainer, pl_module):
        self.model.to(pl_module.device).train()
        self.optimizer = instantiate(HAND_LOOP_OPTIMIZER, _partial_=True)(self.model.parameters())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer_done = self.clock(pl_module.device)
        timed = batch_idx > self.warmup  # the Trainer's interval since the last hand step is one whole step
        if timed:
            self.trainer_seconds += trainer_done - self._resumed
        images, labels = batch
        with torch.enable_grad():
            loss = self.loss_fn(self.model(images), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self._resumed = self.clock(pl_module.device)
        if timed:
            self.hand_seconds += self._resumed - trainer_done
            self.images += len(labels)


def bench_framework(
    steps: int,
    image_size: int,
    batch_size: int,
    backbone: str,
    device: torch.device,
    workdir: Path,
    clock=synced_now,
) -> dict:
    torch.manual_seed(0)
    model = CatClassifier(
        class_names=[str(i) for i in range(12)],
        backbone=backbone,
        pretrained=False,
        image_size=image_size,
        optimizer=HAND_LOOP_OPTIMIZER,  # the same for both sides
        scheduler=None,
        # off: on a GPU the Trainer's copy would otherwise switch to it and the hand loop's would not
        channels_last=False,
    )
    batches = [
        (torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, 12, (batch_size,)))
        for _ in range(steps)
    ]
    hand = InterleavedHandLoop(copy.deepcopy(model), warmup=max(2, steps // 5), clock=clock)
    # What a project run has per step: its CSV logger and speed callback; the hand loop's callback comes last,
    # so that everything else the Trainer does for a step falls inside the Trainer's time.
    silence_library_noise()
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_epochs=1,
        precision="32-true",
        default_root_dir=workdir,
        logger=ResumableCSVLogger(workdir),
        callbacks=[TrainSpeed(), hand],
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    hand_rate, trainer_rate = hand.images / hand.hand_seconds, hand.images / hand.trainer_seconds
    return {
        "model": backbone,
        "image_size": image_size,
        "hand_loop_images_per_sec": hand_rate,
        "trainer_images_per_sec": trainer_rate,
        "ratio": trainer_rate / hand_rate,
    }
