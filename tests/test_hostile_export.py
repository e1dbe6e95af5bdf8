"""Exports that fail: every failure one line, and a failed export leaves the previous model and sidecar a pair."""

import errno

import pytest
from isolated import png
from tiny_models import CLASSES, tiny_checkpoint, tiny_onnx

from cats_model import export
from cats_model.inference import load_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "best.ckpt")


def run_export(capsys, *args: str) -> str:
    """export's main, which must fail: its one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        export.main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    return err


def test_an_out_folder_that_cannot_be_written_fails_before_the_export(checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    err = run_export(capsys, str(checkpoint), "--out", str(tmp_path / "file" / "model.onnx"))
    assert err.startswith(
        f"error: --out {tmp_path / 'file' / 'model.onnx'}: cannot write in {tmp_path / 'file'}"
    )


@pytest.mark.slow  # the export runs, and fails as it writes
def test_a_failed_export_leaves_the_previous_model_and_sidecar_a_pair(tmp_path, monkeypatch):
    out = tiny_onnx(tmp_path / "model.onnx")  # the previous model and its sidecar

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    other = tiny_checkpoint(tmp_path / "other" / "best.ckpt", class_names=CLASSES[:2])  # another model
    monkeypatch.setattr(export, "file_sha256", disk_full)
    with pytest.raises(OSError):
        export.export(str(other), out)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.json",
        "model.onnx",
        "other",
    ]  # nothing half-done
    assert load_model(out).info.class_names == tuple(CLASSES)  # the sidecar still describes the model


def test_calibration_or_guard_images_that_are_all_unreadable_are_one_line_before_the_export(
    checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(export, "export_fp32", None)  # never reached: the images are refused first
    readable, unreadable = tmp_path / "readable", tmp_path / "unreadable"
    for folder in (readable / CLASSES[0], unreadable / CLASSES[0]):
        folder.mkdir(parents=True)
    for i in range(3):
        (readable / CLASSES[0] / f"{i}.png").write_bytes(png(40, 40))
        (unreadable / CLASSES[0] / f"{i}.jpg").write_bytes(b"not a photo")
    for calibration, labelled, message in (
        (unreadable, readable, f"none of the calibration images in {unreadable} could be read"),
        (
            readable,
            unreadable,
            f"none of the images to check the int8 model on in {unreadable} could be read",
        ),
    ):
        err = run_export(capsys, str(checkpoint), "--out", str(tmp_path / "int8.onnx"), "--int8",
                         "--calibration", str(calibration), "--eval", str(labelled))  # fmt: skip
        assert err == f"error: {message}\n"
    assert not (tmp_path / "int8.onnx").exists()
