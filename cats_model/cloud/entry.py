"""What `modal run launch/modal_app.py -- OVERRIDES` does, as a plain function over the Modal calls it makes."""

from collections.abc import Callable
from pathlib import Path

from cats_model.cloud.remote import fresh_run_name
from cats_model.cloud.settings import load_settings
from cats_model.config import compose_train_config
from cats_model.errors import UserError, exit_on_user_error
from cats_model.paths import PROJECT_ROOT

OXFORD_DATAMODULES = ("CatBreedsDataModule", "CatVsOtherDataModule")
# The Modal calls of a running `modal run` entrypoint, for a sweep it starts (the launcher plugin reads them).
ACTIVE_CALLS: dict[str, Callable] | None = None


def load_modal_app():
    """launch/modal_app.py as a module (it is a script of the checkout, not part of the package)."""
    import importlib.util
    import sys

    if "modal_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("modal_app", PROJECT_ROOT / "launch" / "modal_app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["modal_app"] = module
    return sys.modules["modal_app"]


def split_run_name(args: tuple[str, ...] | list[str]) -> tuple[list[str], str | None]:
    """Separate `run_name=NAME` (it picks the run folder) from the Hydra overrides."""
    overrides = [a for a in args if a != "--"]
    names = [a.split("=", 1)[1] for a in overrides if a.startswith("run_name=")]
    return [a for a in overrides if not a.startswith("run_name=")], (names[-1] if names else None)


def needs_oxford_download(cfg) -> bool:
    """Whether a composed config reads Oxford-IIIT Pet from the data volume (synthetic and folder data do not)."""
    data = cfg.data
    return data._target_.rsplit(".", 1)[-1] in OXFORD_DATAMODULES and data.get("synthetic") is None


def run_single(args, prepare_data: Callable[[], dict], train: Callable[[list[str], str], dict]) -> dict:
    overrides, run_name = split_run_name(args)
    settings = load_settings()
    with exit_on_user_error(exit_code=1):
        # Composed here, before paying for anything: bad overrides fail now, in one line.
        if needs_oxford_download(compose_train_config(overrides)):
            prepare_data()
        run_name = run_name or fresh_run_name()
        print(
            f"run {run_name}: training on {settings.train['gpu']} with overrides {overrides or '(none)'}",
            flush=True,
        )
        result = train(overrides, run_name)
        if "error" in result:
            raise UserError(result["error"])
    print(report(result, settings))
    return result


def report(result: dict, settings=None) -> str:
    """The run's name, its final metrics, its cost, and the commands that fetch and resume it."""
    settings = settings or load_settings()
    volume, _ = settings.volume("outputs")
    name = result["run_name"]
    cost = (result.get("wall_time_s") or 0) / 3600 * settings.hourly_price()
    lines = [
        f"run {name} finished: epoch {result.get('epoch')}, val/acc_best {_fmt(result.get('val/acc_best'))}, "
        f"test/acc {_fmt(result.get('test/acc'))}, {result.get('wall_time_s', 0):.0f} s, about ${cost:.3f} "
        f"on {settings.train['gpu']}",
    ]
    best = result.get("best_model_path")
    if best:
        in_volume = f"runs/{name}/{Path(best).relative_to(result['run_dir'])}"
        lines.append(f"fetch the best checkpoint:  modal volume get {volume} {in_volume} .")
    lines.append(
        f"continue this run:          modal run launch/modal_app.py -- run_name={name} trainer.max_epochs=N"
    )
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_sweep(args, prepare_data: Callable, train: Callable) -> None:
    """`-m` after `--`: the same Hydra multirun as `python -m cats_model.train -m hydra/launcher=modal ...`,
    its jobs made with this entrypoint's Modal calls."""
    global ACTIVE_CALLS
    import sys

    from cats_model.train import main as train_main

    overrides = [a for a in args if a not in ("-m", "--multirun", "--")]
    saved_argv, ACTIVE_CALLS = sys.argv, {"prepare_data": prepare_data, "train": train}
    sys.argv = ["cats_model.train", "--multirun", "hydra/launcher=modal", *overrides]
    try:
        train_main()
    finally:
        sys.argv, ACTIVE_CALLS = saved_argv, None


def main(args, prepare_data: Callable, train: Callable):
    if "-m" in args or "--multirun" in args:
        return run_sweep(args, prepare_data, train)
    return run_single(args, prepare_data, train)
