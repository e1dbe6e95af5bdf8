"""The benchmark runs end to end, reports ratios measured side by side, and puts each side's seconds on it."""

import json

import pytest

from cats_model.bench.cli import main


@pytest.mark.slow
def test_bench_reports_side_by_side_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # The GPU section forced on: on a CPU it runs the same code with plain fp32 as the defaults.
    results = main(["--images-per-class", "4", "--image-size", "32", "--batch-size", "8", "--workers", "0",
                    "--epochs", "1", "--train-size", "16", "--train-steps", "4", "--gpu-steps", "3",
                    "--json", str(out)], accelerator_section=True)  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    pipeline, framework, accelerator = results["input_pipeline"], results["framework"], results["accelerator"]
    assert pipeline["ratio"] == pytest.approx(
        pipeline["project_images_per_sec"] / pipeline["baseline_images_per_sec"]
    )
    assert framework["ratio"] == pytest.approx(
        framework["trainer_images_per_sec"] / framework["hand_loop_images_per_sec"]
    )
    assert accelerator["epoch_vs_synthetic"] == pytest.approx(
        accelerator["epoch_images_per_sec"] / accelerator["defaults_images_per_sec"]
    )
    assert all(v > 0 for v in (pipeline["project_images_per_sec"], framework["trainer_images_per_sec"]))
    # What the configs give a CPU; the GPU's defaults are checked against the configs in test_configs.
    assert (accelerator["device"], accelerator["model"], accelerator["precision"]) == (
        "cpu",
        "resnet18",
        "32-true",
    )
    assert accelerator["achieved_tflops"] > 0 and accelerator["fraction_of_peak"] is None  # no peak for a CPU
    printed = capsys.readouterr().out
    for row in ("| input pipeline, images/s (vs plain torchvision) |", "Trainer vs hand loop",
                "(32-true vs 32-true)", "| a whole epoch of real data vs synthetic input, images/s |"):  # fmt: skip
        assert row in printed


def test_each_gpu_gets_its_own_peak():
    from cats_model.bench.accelerator import peak_tflops

    names = (
        "NVIDIA L4",
        "NVIDIA L40S",
        "NVIDIA A10G",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA H200",
        "Tesla T4",
        "cpu",
    )
    assert [peak_tflops(name) for name in names] == [121, 362, 70, 312, 989, 65, None]


class FakeClock:
    """Seconds that pass only when told: each reading adds `tick`, and `advance` adds a delay."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self, device=None) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.slow
def test_time_spent_in_the_trainers_steps_counts_against_the_trainer_only(tmp_path, monkeypatch):
    """The interleaved measurement attributes each side's seconds to it: on a controlled clock, a delay added
    inside every Trainer step (a callback's 0.3 s) lands in the Trainer's time, and the hand loop's steps are
    charged only what passed between its own two readings."""
    import torch

    from cats_model.bench import framework

    clock = FakeClock(tick=0.01)

    class SlowTrainSpeed(framework.TrainSpeed):
        def on_train_batch_end(self, *args):
            super().on_train_batch_end(*args)
            clock.advance(0.3)

    monkeypatch.setattr(framework, "TrainSpeed", SlowTrainSpeed)
    result = framework.bench_framework(10, 32, 4, "mobilenet_v3_small", torch.device("cpu"), tmp_path, clock)
    trainer_step, hand_step = (4 / result[f"{side}_images_per_sec"] for side in ("trainer", "hand_loop"))
    # Per step: the delay and the reading that ends the Trainer's interval; one reading ends the hand loop's.
    assert trainer_step == pytest.approx(0.3 + 0.01)
    assert hand_step == pytest.approx(0.01)
