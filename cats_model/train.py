"""Training entry: `python -m cats_model.train [overrides]`. A thin @hydra.main over `train(cfg) -> metrics`."""

import contextlib
import json
import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cats_model.atomic import atomic_write_text
from cats_model.callbacks import AtomicCheckpointIO, TrainSpeed, checkpoint_epoch
from cats_model.config import SENT_CONFIG_NAME
from cats_model.console import print_config_tree
from cats_model.errors import SIGTERM_EXIT, UserError, crash_reported, exit_on_user_error, fail
from cats_model.instantiators import instantiate_callbacks, instantiate_loggers
from cats_model.noise import resuming_quietly, silence_library_noise
from cats_model.override_typos import closest_key_named
from cats_model.paths import CONFIG_DIR  # importing it registers the config resolvers
from cats_model.plots import write_run_plots
from cats_model.run_folder import (
    checkpoint_to_resume,
    hold,
    remove_unfinished_writes,
    removed_if_failed_empty,
    set_aside_checkpoints,
)
from cats_model.run_layout import LAST_CHECKPOINT, METRICS_FILE
from cats_model.run_summary import summary_block
from cats_model.system import auto_precision, use_available_cpus, uses_cuda
from cats_model.validation import check_values

log = logging.getLogger(__name__)


def trainer_arguments(trainer_cfg: DictConfig) -> dict:
    """The Trainer's arguments, with `precision: auto` decided by the hardware and GPU requests checked."""
    settings = OmegaConf.to_container(trainer_cfg, resolve=True)
    accelerator = str(settings.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible: use trainer.accelerator=cpu"
        )
    if settings.get("precision") == "auto":
        settings["precision"] = auto_precision(accelerator)
    return settings


def allow_tf32(trainer_args: dict) -> None:
    """On CUDA, let float32 matrix products outside autocast (all of them under 32-true) use TF32 tensor cores.
    A process-wide setting of PyTorch's."""
    if uses_cuda(str(trainer_args.get("accelerator", "auto"))):
        torch.set_float32_matmul_precision("high")


def check_config(cfg: DictConfig) -> dict:
    """Check every value against what it configures (data, model, optimizer, scheduler, Trainer) and against its
    allowed range: a typo or an impossible value fails here in one line, before data, model or GPU are touched.
    Returns the Trainer's arguments."""
    return check_values(cfg, trainer_arguments)


def csv_log(trainer: L.Trainer) -> Path | None:
    """The metrics file of the run's CSV logger, if it has one: the training curves are drawn from it."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            return Path(logger.experiment.metrics_file_path)
    return None


def last_checkpoint(cfg: DictConfig) -> Path:
    """Where the last-checkpoint callback (configs/callbacks/last_checkpoint.yaml) writes."""
    return Path(cfg.paths.checkpoint_dir) / LAST_CHECKPOINT


def train(cfg: DictConfig) -> dict:
    """Fit (resuming from the run's last checkpoint), test the best checkpoint, write and return the metrics.
    The values are checked first; then the run folder is held by this process alone until the end."""
    started = time.time()
    silence_library_noise()
    if cfg.get("print_config"):
        print_config_tree(cfg)
    trainer_args = check_config(cfg)
    allow_tf32(trainer_args)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in the printed config and its file
    with hold(Path(cfg.paths.output_dir)):
        return fit_and_test(cfg, trainer_args, started)


def fit_and_test(cfg: DictConfig, trainer_args: dict, started: float) -> dict:
    """Everything after the checks, in the run folder this process holds."""
    checkpoint_dir = Path(cfg.paths.checkpoint_dir)
    if not cfg.resume:
        set_aside_checkpoints(checkpoint_dir)
    remove_unfinished_writes(checkpoint_dir)
    resume_from = checkpoint_to_resume(last_checkpoint(cfg))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()  # a missing dataset fails here
    datamodule.setup("fit")
    model = instantiate(
        cfg.model,
        class_names=datamodule.class_names,  # the classes come from the data, never from the config
        cat_head=datamodule.has_not_cat,  # and so does the cat-or-not head: only where not-cats are to learn from
        image_size=datamodule.image_size,
        mean=list(datamodule.mean),
        std=list(datamodule.std),
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        _convert_="all",
        _recursive_=False,  # the optimizer and scheduler configs stay configs, built when training starts
    )
    speed = TrainSpeed()
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + [speed]
    trainer = L.Trainer(
        **trainer_args,
        callbacks=callbacks,
        logger=instantiate_loggers(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )
    use_available_cpus(trainer.num_devices)  # before fit, where DDP starts its other ranks

    if resume_from:
        log.info("resuming from %s", resume_from)
    with resuming_quietly() if resume_from else contextlib.nullcontext():
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)

    best = next(
        (c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint) and c.monitor), None
    )
    best_path = (best.best_model_path or None) if best is not None else None
    test_metrics = {}
    if cfg.test:  # on the best checkpoint; without one (no validation ran), on the weights as they are
        # verbose=False: the run's summary block gives the test scores, to 4 digits
        results = trainer.test(
            model, datamodule=datamodule, ckpt_path=best_path, weights_only=True, verbose=False
        )
        test_metrics = results[0] if results else {}

    last = last_checkpoint(cfg)
    best_score = best.best_model_score if best is not None else None
    metrics = {
        "val/acc_best": float(best_score) if best_score is not None else None,
        **{key: float(value) for key, value in test_metrics.items()},
        "best_model_path": best_path,
        "best_epoch": checkpoint_epoch(best_path) if best_path else None,
        "last_model_path": str(last) if last.is_file() else None,
        "epoch": trainer.current_epoch,  # epochs done: counted from 1, as in the log and checkpoint names
        "run_dir": cfg.paths.output_dir,
        "global_step": trainer.global_step,
        "resumed_from": str(resume_from) if resume_from else None,
        "wall_time_s": round(time.time() - started, 2),
        "train_images_per_sec": speed.images_per_sec,
        "classes": datamodule.class_names,
        "bad_images": datamodule.bad_images,
        **model.test_report,
    }
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        metrics["plots"] = write_run_plots(
            output_dir, datamodule.class_names, model.test_report, csv_log(trainer)
        )
        atomic_write_text(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        log.info("metrics written to %s", output_dir / METRICS_FILE)
    return metrics


@contextlib.contextmanager
def out_of_memory_explained(cfg: DictConfig):
    """CUDA out of memory recurs with the same config: one line to act on, not a crash that Modal would retry."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        size = cfg.data.batch_size
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "the GPU"
        raise UserError(
            f"CUDA out of memory on {device} with data.batch_size={size}: "
            f"try a smaller batch, e.g. data.batch_size={max(1, size // 2)}"
        ) from err


@contextlib.contextmanager
def stopped_by_sigterm():
    """Lightning ends a training stopped by SIGTERM with a SystemExit without a code, read as success: make it a
    line and SIGTERM_EXIT, so that what stopped it, and whatever runs next, can tell."""
    try:
        yield
    except SIGTERMException:
        fail(
            f"training stopped by SIGTERM before it finished (no {METRICS_FILE}): run the same command again "
            "to continue from its last checkpoint",
            SIGTERM_EXIT,
        )


# An absolute config path: the same configs whether run as `python -m cats_model.train` or called from
# another module (the Modal entrypoint's sweeps).
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A single run ends a user error with one line, leaving no empty run folder; in a sweep it fails only its
    # job, reported by the launcher.
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        with stopped_by_sigterm(), out_of_memory_explained(cfg):
            metrics = train(cfg)
    else:
        with (
            crash_reported(),  # for the Modal train function, which runs single runs only
            stopped_by_sigterm(),
            exit_on_user_error(),
            removed_if_failed_empty(hydra_cfg.runtime.output_dir, f"{hydra_cfg.job.name}.log"),
            out_of_memory_explained(cfg),
        ):
            metrics = train(cfg)
        # Its command to continue the run repeats the overrides Hydra recorded. A config sent from where a Modal run
        # was typed (also a local sweep's job) was composed from others: the run's caller reports it (the
        # entrypoint's block, the sweep's table).
        if hydra_cfg.job.config_name != SENT_CONFIG_NAME:
            log.info("run finished\n%s", summary_block(metrics, list(hydra_cfg.overrides.task)))
    # Sweepers such as Optuna minimise or maximise what the task returns.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    with closest_key_named(exit_on_error=True):  # a mistyped override key: one line naming the closest key
        main()
