"""The benchmark runs end to end and reports ratios measured side by side (no wall-clock thresholds here)."""

import json

import pytest

from cats_model.bench import main


@pytest.mark.slow
def test_bench_reports_side_by_side_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = main(["--image-size", "64", "--batch-size", "16", "--workers", "0", "--epochs", "1",
                    "--train-size", "32", "--train-steps", "8", "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    pipeline, framework = results["input_pipeline"], results["framework"]
    assert pipeline["ratio"] == pytest.approx(
        pipeline["project_images_per_sec"] / pipeline["baseline_images_per_sec"]
    )
    assert framework["ratio"] == pytest.approx(
        framework["trainer_images_per_sec"] / framework["hand_loop_images_per_sec"]
    )
    assert all(v > 0 for v in (pipeline["project_images_per_sec"], framework["trainer_images_per_sec"]))
    assert "gpu" not in results  # measured only where there is one
    printed = capsys.readouterr().out
    assert (
        "| input pipeline, images/s (vs plain torchvision) |" in printed and "Trainer vs hand loop" in printed
    )
