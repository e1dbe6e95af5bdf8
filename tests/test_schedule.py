import math

import pytest
import torch

from cats_model.model.schedule import warmup_cosine, warmup_cosine_schedule


@pytest.mark.parametrize("total", [0, 1, 2, 5, 50])
@pytest.mark.parametrize("warmup", [0, 1, 5, 50, 80])
def test_every_combination_of_length_and_warmup_is_defined(total, warmup):
    values = [warmup_cosine(step, warmup, total, 0.01) for step in range(max(total, 1) + 3)]
    assert all(math.isfinite(v) and 0 < v <= 1 for v in values)


def test_warmup_rises_then_cosine_falls_to_the_floor():
    values = [warmup_cosine(step, 10, 110, 0.1) for step in range(111)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] == pytest.approx(0.1)


def test_the_schedule_warms_up_over_its_epochs_then_decays_per_step():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine_schedule(optimizer, total_steps=40, epochs=4, warmup_epochs=1, min_lr_ratio=0.1)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:10] == pytest.approx([(step + 1) / 10 for step in range(10)])  # one epoch: 10 steps
    assert rates[10] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1, abs=0.01)
