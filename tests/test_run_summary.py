"""The block that ends a run: what it reached, where its files are, and the commands that use it next."""

import shlex

from cats_model.run_summary import summary_block

RESULT = {
    "val/acc_best": 0.93749998,
    "test/acc": 0.98333334,
    "test/acc_macro": 0.9821428,
    "best_model_path": "/somewhere/checkpoints/best-epoch007-acc0.9375.ckpt",
    "best_epoch": 7,
    "epoch": 10,
    "wall_time_s": 20.4,
    "train_images_per_sec": 412.34,
}
OVERRIDES = ["data=synthetic", "run_name=day", "trainer.max_epochs=10", "optimizer.lr=3e-4"]


def test_a_local_run_ends_with_its_scores_files_and_next_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = summary_block({**RESULT, "run_dir": str(tmp_path / "outputs/runs/day")}, OVERRIDES).splitlines()
    checkpoint = "outputs/runs/day/checkpoints/best-epoch007-acc0.9375.ckpt"  # in the run folder, from here
    assert block[:4] == [
        "run folder: outputs/runs/day",
        "best epoch 7 of 10: val/acc 0.9375; test acc 0.9833, acc_macro 0.9821",
        "took 20 s, training 412.3 images/s",
        f"best checkpoint: {checkpoint}",
    ]
    commands = [shlex.split(line.split("#")[0]) for line in block[5:]]
    assert commands == [
        ["python", "-m", "cats_model.predict", checkpoint, "photo.jpg"],
        ["python", "-m", "cats_model.export", checkpoint, "--out", "outputs/runs/day/cats.onnx"],
        ["python", "-m", "cats_model.serve", checkpoint],
        # the run's own overrides again, on its folder, with more epochs
        ["python", "-m", "cats_model.train", "data=synthetic", "optimizer.lr=3e-4",
         "hydra.run.dir=outputs/runs/day", "trainer.max_epochs=20"],
    ]  # fmt: skip


def test_a_modal_run_fetches_first_and_names_the_fetched_files():
    block = summary_block({**RESULT, "run_dir": "/outputs/runs/day"}, OVERRIDES, modal_run="day").splitlines()
    checkpoint = "runs/day/checkpoints/best-epoch007-acc0.9375.ckpt"  # where fetch puts it
    assert block[0] == "run day: on the outputs volume, runs/day/ (fetched into ./runs/day/)"
    assert block[3] == f"best checkpoint: {checkpoint}"
    commands = [line.split("#")[0].strip() for line in block[5:]]
    assert commands == [
        "python -m cats_model.cloud fetch day",
        f"python -m cats_model.predict {checkpoint} photo.jpg",
        f"python -m cats_model.export {checkpoint} --out runs/day/cats.onnx",
        f"python -m cats_model.serve {checkpoint}",
        "modal run launch/modal_app.py -- data=synthetic optimizer.lr=3e-4 run_name=day trainer.max_epochs=20",
    ]


def test_a_path_with_spaces_is_quoted_for_the_shell(tmp_path):
    block = summary_block({**RESULT, "run_dir": "/my runs/day"}, ["data.root=/my photos"])
    assert "python -m cats_model.serve '/my runs/day/checkpoints/best-epoch007-acc0.9375.ckpt'" in block
    assert "python -m cats_model.train 'data.root=/my photos' 'hydra.run.dir=/my runs/day'" in block


def test_a_one_epoch_run_offers_one_more_in_words_that_read_right():
    block = summary_block({**RESULT, "epoch": 1, "best_epoch": 1, "run_dir": "/r"}, [])
    assert block.splitlines()[-1].endswith("trainer.max_epochs=2    # 1 epoch more")


def test_a_run_without_validation_has_no_checkpoint_to_offer():
    block = summary_block({**RESULT, "best_model_path": None, "best_epoch": None, "run_dir": "/r"}, [])
    assert block.splitlines()[1].startswith("10 epochs: val/acc 0.9375")
    assert block.splitlines()[-1] == "no best checkpoint: no validation ran"
