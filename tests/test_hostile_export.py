"""Exports that fail: every failure one line, and a failed export leaves the previous model and sidecar a pair."""

import errno
import shutil

import pytest
from isolated import png
from tiny_models import CLASSES, tiny_checkpoint

from cats_model import export
from cats_model.inference import load_model, sidecar_path

pytestmark = pytest.mark.slow  # each export takes seconds


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    checkpoint = tiny_checkpoint(folder / "run" / "checkpoints" / "best.ckpt")
    export.main([str(checkpoint), "--out", str(folder / "model.onnx")])
    return checkpoint, folder / "model.onnx"


def run_export(capsys, *args: str) -> str:
    """export's main, which must fail: its one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        export.main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    return err


def test_an_out_folder_that_cannot_be_written_fails_before_the_export(exported, tmp_path, capsys):
    checkpoint, _ = exported
    (tmp_path / "file").write_text("a file, not a folder")
    err = run_export(capsys, str(checkpoint), "--out", str(tmp_path / "file" / "model.onnx"))
    assert err.startswith(
        f"error: --out {tmp_path / 'file' / 'model.onnx'}: cannot write in {tmp_path / 'file'}"
    )


def test_a_failed_export_leaves_the_previous_model_and_sidecar_a_pair(
    exported, tmp_path, capsys, monkeypatch
):
    checkpoint, model = exported
    out = tmp_path / "model.onnx"
    shutil.copy(model, out)
    shutil.copy(sidecar_path(model), sidecar_path(out))

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


def test_calibration_images_that_are_all_unreadable_are_one_line(exported, tmp_path, capsys):
    checkpoint, _ = exported
    calibration, labelled = tmp_path / "calibration", tmp_path / "eval" / CLASSES[0]
    calibration.mkdir()
    labelled.mkdir(parents=True)
    for i in range(3):
        (calibration / f"{i}.jpg").write_bytes(b"not a photo")
        (labelled / f"{i}.png").write_bytes(png(40, 40))
    err = run_export(capsys, str(checkpoint), "--out", str(tmp_path / "int8.onnx"), "--int8",
                     "--calibration", str(calibration), "--eval", str(tmp_path / "eval"))  # fmt: skip
    assert err == f"error: none of the calibration images in {calibration} could be read\n"
    assert not (tmp_path / "int8.onnx").exists()
