"""torchvision backbones with their classifier head replaced to fit the data's classes."""

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from cats_model.errors import UserError

log = logging.getLogger(__name__)
BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)


def build_backbone(
    name: str, num_classes: int, pretrained: bool, weights_dir: str | None = None
) -> nn.Module:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    model = torchvision.models.get_model(name, weights=None)
    if pretrained:
        model.load_state_dict(fetch_imagenet_weights(name, weights_dir))
    elif name.startswith("mobilenet_v3"):
        # torchvision builds these with BatchNorm momentum 0.01, tuned for long ImageNet runs; from scratch over
        # a few epochs the running statistics lag so far behind that eval accuracy stays at chance.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    replace_head(model, num_classes)
    return model


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer (every supported backbone ends in one) for a fresh one of `num_classes`."""
    name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, nn.Linear(head.in_features, num_classes))


def fetch_imagenet_weights(name: str, weights_dir: str | None) -> dict:
    """The ImageNet state dict, downloaded once into `weights_dir` (a volume remotely) and verified by hash."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    directory = Path(weights_dir or Path(torch.hub.get_dir()) / "checkpoints").expanduser()
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=str(directory), progress=True, check_hash=True
        )
    except (
        Exception
    ) as err:  # URLError, HTTPError, timeouts, a hash mismatch: all end the same way for the user
        raise UserError(
            f"could not fetch ImageNet weights for {name} from {weights.url} into {directory} "
            f"({type(err).__name__}: {err}); place the file there by hand, or train from scratch with "
            f"model.pretrained=false"
        ) from err
