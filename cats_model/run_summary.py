"""The block that ends a run: what it reached, where its files are, and the commands that use it next.

One function for a run on this machine and for a Modal run, whose files are on the outputs volume: there the
block fetches them first and names them where `python -m cats_model.cloud fetch` puts them (./runs/NAME/).
"""

import shlex
from pathlib import Path

from cats_model.run_layout import checkpoint_dir, run_dir

# Set by the resume command itself: the run's folder and its new number of epochs.
RESUME_KEYS = ("hydra.run.dir", "run_name", "trainer.max_epochs")


def summary_block(result: dict, overrides: list[str], modal_run: str | None = None) -> str:
    """`result`: the run's metrics (a Modal call's result adds its run's name); `overrides`: those the run
    was started with, repeated in the command that resumes it; `modal_run`: the run's name on the outputs volume,
    for a Modal run."""
    epochs = result.get("epoch") or 0
    more = max(2 * epochs, 1)
    kept = [shlex.quote(o) for o in overrides if o.lstrip("+~").split("=", 1)[0] not in RESUME_KEYS]
    if modal_run:
        folder = run_dir(Path(), modal_run)  # where fetch puts it: laid out as on the volume
        where = f"run {modal_run}: on the outputs volume, {folder}/ (fetched into ./{folder}/)"
        first = [f"python -m cats_model.cloud fetch {modal_run}"]
        resume = ["modal run launch/modal_app.py --", *kept, f"run_name={modal_run}"]
    else:
        folder = _shown(result["run_dir"]) if result.get("run_dir") else None
        where = f"run folder: {folder}"
        first = []
        resume = ["python -m cats_model.train", *kept, shlex.quote(f"hydra.run.dir={folder}")]
    best = result.get("best_model_path")
    checkpoint = checkpoint_dir(folder) / Path(best).name if best and folder else None
    lines = [where, _scores(result), _speed(result)]
    if checkpoint is None:
        lines.append("no best checkpoint: no validation ran")
        return "\n".join(lines)
    model = shlex.quote(str(checkpoint))
    lines += [
        f"best checkpoint: {checkpoint}",
        "next:",
        *(f"  {command}" for command in first),
        f"  python -m cats_model.predict {model} photo.jpg",
        f"  python -m cats_model.export {model} --out {shlex.quote(str(folder / 'cats.onnx'))}",
        f"  python -m cats_model.serve {model}",
        f"  {' '.join([*resume, f'trainer.max_epochs={more}'])}    # {_epochs(more - epochs)} more",
    ]
    return "\n".join(lines)


def _scores(result: dict) -> str:
    epoch, epochs = result.get("best_epoch"), result.get("epoch")
    best = f"best epoch {epoch} of {epochs}" if epoch else _epochs(epochs)
    tests = [
        f"{key.removeprefix('test/')} {_digits(result.get(key))}" for key in ("test/acc", "test/acc_macro")
    ]
    return f"{best}: val/acc {_digits(result.get('val/acc_best'))}; test {', '.join(tests)}"


def _speed(result: dict) -> str:
    seconds, rate = result.get("wall_time_s"), result.get("train_images_per_sec")
    took = f"took {seconds:.0f} s" if seconds is not None else "took ? s"
    return f"{took}, training {rate:.1f} images/s" if rate else took


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _digits(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _shown(path: str) -> Path:
    """A path under the working directory as a relative one, shorter to read and to paste; others as they are."""
    path = Path(path).absolute()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
