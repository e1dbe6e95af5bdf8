"""A run that fails before writing anything of its own leaves no folder behind.

Hydra creates the run folder, with its copy of the config and the job's log file, before the task starts; a run
stopped by a missing dataset or a bad value would otherwise leave that folder under outputs/runs/, empty.
"""

import contextlib
import shutil
from pathlib import Path

# What a start leaves in a run folder before training writes anything: Hydra's config copy and the lock file
# that keeps a second training out of the folder (besides the job's log).
MACHINERY = (".hydra", ".lock")


def remove_if_empty(run_dir: Path, log_name: str) -> bool:
    """Remove `run_dir` if it holds nothing but MACHINERY and the job's log (whose lines were also printed on
    the console); True if removed."""
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {*MACHINERY, log_name}:
        return False
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for name in (".lock", log_name):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something new appeared meanwhile: keep it
        run_dir.rmdir()
    return not run_dir.exists()


@contextlib.contextmanager
def removed_if_failed_empty(run_dir: str | Path, log_name: str):
    try:
        yield
    except BaseException:
        remove_if_empty(Path(run_dir), log_name)
        raise
