"""The LightningModule: a backbone, cross-entropy, torchmetrics, and optimizer + schedule from config."""

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from cats_model.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cats_model.model.backbones import build_backbone


def _summary_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_macro": MulticlassAccuracy(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class CatClassifier(L.LightningModule):
    """Everything needed to use a checkpoint without the config is saved in it: classes, backbone, pre-processing.

    `optimizer` and `scheduler` are the configs of the same names, `_target_` and settings, kept as plain values
    (a checkpoint loads with `weights_only=True`) and instantiated when training starts; `scheduler` None: none."""

    def __init__(
        self,
        class_names: list[str],
        backbone: str = "resnet18",
        pretrained: bool = True,
        weights_dir: str | None = None,
        image_size: int = 224,
        mean: list[float] = IMAGENET_MEAN,
        std: list[float] = IMAGENET_STD,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        num_classes = len(class_names)
        self.net = build_backbone(backbone, num_classes, pretrained, weights_dir)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = _summary_metrics(num_classes, "val/")
        self.test_metrics = _summary_metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_report: dict = {}
        self.use_channels_last = bool(channels_last)

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names)

    def setup(self, stage: str) -> None:
        # channels_last pays off on tensor-core GPUs and slows CPUs down: on by default on CUDA only.
        if self.hparams.channels_last is None:
            self.use_channels_last = self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        if self.use_channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        # sync_dist: under DDP the mean over every rank's batches, as the torchmetrics metrics are.
        self.log("val/loss", self.loss(logits, labels), prog_bar=True, sync_dist=True)
        self.val_metrics(logits, labels)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("test/loss", self.loss(logits, labels), sync_dist=True)
        self.test_metrics(logits, labels)
        self.test_confusion(logits, labels)
        self.log_dict(self.test_metrics)

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute()
        per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
        self.test_report = {
            "per_class_acc": dict(zip(self.class_names, per_class.tolist())),
            "confusion_matrix": confusion.tolist(),
        }
        self.test_confusion.reset()

    def configure_optimizers(self):
        """The optimizer and schedule of the `optimizer` and `scheduler` configs (`_target_` and settings)."""
        # No weight decay on biases and normalisation parameters (the 1-d ones), as usual for fine-tuning.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        optimizer = instantiate(self.hparams.optimizer, _partial_=True, _convert_="all")(groups)
        if not self.hparams.scheduler:  # scheduler=constant
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        schedule = instantiate(self.hparams.scheduler, _partial_=True, _convert_="all")
        scheduler = schedule(optimizer, total_steps=total_steps, epochs=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
