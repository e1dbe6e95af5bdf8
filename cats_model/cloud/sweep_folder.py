"""A sweep's folder on this machine (outputs/sweeps/<time>): its config, its jobs' folders, its table."""

import contextlib
import shutil
from pathlib import Path

from cats_model.errors import UserError
from cats_model.run_layout import SWEEP_HYDRA_FILES


@contextlib.contextmanager
def removed_if_nothing_ran(sweep_dir: Path):
    """A sweep that stops in one line before any job ran (a bad value, Modal not set up) leaves no folder behind:
    only one that holds nothing but Hydra's files is removed (a rerun's folder keeps its jobs)."""
    try:
        yield
    except UserError:
        if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= SWEEP_HYDRA_FILES:
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
