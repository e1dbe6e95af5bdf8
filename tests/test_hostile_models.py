"""Models that disagree with what describes them: checked once at load, in one line, by predict and serve alike;
and a batch whose rows do not match fails every request waiting on it."""

import asyncio
import json

import pytest
from isolated import png
from tiny_models import tiny_onnx

from cats_model.bench.serving import free_port
from cats_model.predict import main as predict_main
from cats_model.serve.__main__ import main as serve_main
from cats_model.serve.batcher import Batcher

BROKEN = {
    "fewer logits than class names": (
        dict(outputs=2),
        "gives an output of shape (2, 2) for 2 images, not (2, 3)",
    ),
    "more logits than class names": (
        dict(outputs=5),
        "gives an output of shape (2, 5) for 2 images, not (2, 3)",
    ),
    "one row for any batch": (dict(one_row=True), "gives an output of shape (1, 3) for 2 images, not (2, 3)"),
    "another input size": (
        dict(image_size=48),
        "fails on a batch of 2 images of 32x32, the size its sidecar gives",
    ),
    "NaN logits": (dict(nan=True), "gives values that are not finite (NaN or infinity)"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_model_that_disagrees_with_its_sidecar_is_one_line_at_load(case, tmp_path, capsys):
    kind, sentence = BROKEN[case]
    model = tiny_onnx(tmp_path / "model.onnx", **kind)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(40, 30))
    for main, args in ((predict_main, [str(photo), "--json"]), (serve_main, ["--port", str(free_port())])):
        with pytest.raises(SystemExit) as exit_info:
            main([str(model), *args])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and out == "", out
        assert err.startswith(f"error: {model} {sentence}") and err.count("\n") == 1, err


def test_a_model_that_agrees_with_its_sidecar_predicts(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "model.onnx")
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(40, 30))
    predict_main([str(model), str(photo), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert sum(p["probability"] for p in row["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_the_batcher_fails_every_waiting_request_when_a_batch_has_the_wrong_rows():
    async def scenario():
        batcher = Batcher(lambda items: [0], max_batch_size=8, max_wait_ms=50)  # one row, whatever the batch
        await batcher.start()
        try:
            with batcher.coming():  # the first request waits for the others: one batch of 8
                calls = [asyncio.ensure_future(batcher(i)) for i in range(8)]
                await asyncio.sleep(0.01)
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert len(results) == 8 and all(isinstance(r, RuntimeError) for r in results), results
    assert "gave 1 results for a batch of" in str(results[-1])
