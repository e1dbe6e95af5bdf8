"""The LightningModule: a backbone, cross-entropy, torchmetrics, and optimizer + schedule from config.

With `cat_head` the last layer gives one more output, the cat-or-not logit: one forward pass answers both. The
breed head learns from the cats of each batch, the cat head from all of it (cats_model.cat_or_not labels the
not-cats). Each validation chooses the threshold on P(cat) for `max_false_reject` and keeps it in the
hyper-parameters, so every checkpoint carries the threshold chosen for its own weights.
"""

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from cats_model import cat_or_not
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
        cat_head: bool = False,
        max_false_reject: float = 0.02,
        cat_threshold: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if cat_head and cat_threshold is None:  # until a validation chooses one
            self.hparams.cat_threshold = cat_or_not.DEFAULT_THRESHOLD
        num_classes = len(class_names)
        self.net = build_backbone(backbone, num_classes + int(cat_head), pretrained, weights_dir)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.cat_loss = nn.BCEWithLogitsLoss()
        self._cat_logits: list[tuple[torch.Tensor, torch.Tensor]] = []  # (cat logits, labels) of this epoch
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

    @property
    def cat_threshold(self) -> float | None:
        """P(cat) at or above which a photo is a cat; None for a breed-only model."""
        return float(self.hparams.cat_threshold) if self.hparams.cat_head else None

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(breed logits (N, classes), cat-or-not logit (N,) or None without a cat head), in one pass."""
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.net(images)
        if not self.hparams.cat_head:
            return logits, None
        return logits[:, :-1], logits[:, -1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The breed logits, as for every model (the cat logit comes from `heads`)."""
        return self.heads(images)[0]

    def _step(self, batch, stage: str):
        """Both heads' losses summed, the breed logits and labels of the cats; the cat logits kept for the epoch."""
        images, labels = batch
        breed_logits, cat_logit = self.heads(images)
        cats = cat_or_not.is_cat(labels)
        breed_logits, breed_labels = breed_logits[cats], labels[cats]
        # A batch without cats (possible where dogs outnumber them, as in Oxford) teaches the cat head only.
        loss = self.loss(breed_logits, breed_labels) if len(breed_labels) else breed_logits.sum()
        if cat_logit is not None:
            cat_loss = self.cat_loss(cat_logit, cats.float())
            self.log(f"{stage}/cat_loss", cat_loss, sync_dist=stage != "train")
            loss = loss + cat_loss
            if stage != "train":
                self._cat_logits.append((cat_logit.detach().float(), labels))
        return loss, breed_logits, breed_labels

    def training_step(self, batch, batch_idx):
        loss, logits, labels = self._step(batch, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        if len(labels):
            self.train_acc(logits, labels)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, logits, labels = self._step(batch, "val")
        # sync_dist: under DDP the mean over every rank's batches, as the torchmetrics metrics are.
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        if len(labels):
            self.val_metrics(logits, labels)
            self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, logits, labels = self._step(batch, "test")
        self.log("test/loss", loss, sync_dist=True)
        if len(labels):
            self.test_metrics(logits, labels)
            self.test_confusion(logits, labels)
            self.log_dict(self.test_metrics)

    def _epoch_cat_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's (cat logits, labels), from every process."""
        logits, labels = (torch.cat(parts) for parts in zip(*self._cat_logits))
        self._cat_logits.clear()
        return self.all_gather(logits).flatten(), self.all_gather(labels).flatten()

    def on_validation_epoch_start(self) -> None:
        self._cat_logits.clear()  # nothing left over from an interrupted epoch

    def on_test_epoch_start(self) -> None:
        self._cat_logits.clear()

    def on_validation_epoch_end(self) -> None:
        if not self._cat_logits:
            return
        logits, labels = self._epoch_cat_logits()
        # Set before the checkpoint callbacks save (on_validation_end): each checkpoint holds its own threshold.
        threshold = cat_or_not.choose_threshold(logits, labels, self.hparams.max_false_reject)
        self.hparams.cat_threshold = threshold
        # The same on every process (gathered): sync_dist only says so to Lightning, averaging equal values.
        for key, value in cat_or_not.report(logits.sigmoid(), labels, threshold).items():
            self.log(f"val/{key}", value, sync_dist=True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Testing the best checkpoint loads its weights into this module: its threshold goes with them.
        saved = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY, {})
        if "cat_threshold" in saved:
            self.hparams.cat_threshold = saved["cat_threshold"]

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute()
        per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
        self.test_report = {
            "per_class_acc": dict(zip(self.class_names, per_class.tolist())),
            "confusion_matrix": confusion.tolist(),
        }
        self.test_confusion.reset()
        if self._cat_logits:
            logits, labels = self._epoch_cat_logits()
            for key, value in cat_or_not.report(logits.sigmoid(), labels, self.cat_threshold).items():
                self.log(f"test/{key}", value, sync_dist=True)
            self.test_report["cat_threshold"] = self.cat_threshold
            self.test_report["max_false_reject"] = self.hparams.max_false_reject

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
