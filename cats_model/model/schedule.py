"""Learning-rate schedules, stepped per batch. A `scheduler` config names one of these by `_target_` with its
settings; the model adds the optimizer and the length of the run: `(optimizer, total_steps, epochs)`."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier at `step`. Defined for every combination, including warm-up >= total and total = 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: Optimizer, total_steps: int, epochs: int, warmup_epochs: float, min_lr_ratio: float
) -> LambdaLR:
    """Linear warm-up over `warmup_epochs`, then cosine decay to `min_lr_ratio` times the optimizer's lr."""
    warmup_steps = round(warmup_epochs * total_steps / epochs)
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio))
