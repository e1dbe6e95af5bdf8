"""The model: torchvision backbones with a fitted head, the LR schedule, and the LightningModule."""
