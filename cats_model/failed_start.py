"""A run that fails before writing anything of its own leaves no folder behind.

Hydra creates the run folder, with its copy of the config and the job's log file, before the task starts; a run
stopped by a missing dataset or a bad value would otherwise leave that folder under outputs/runs/, empty.
"""

import contextlib
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

# What a start leaves in a run folder before training writes anything, besides the job's log: Hydra's config
# copy, and the lock file that keeps a second training out of the folder.
HYDRA_DIR, LOCK_FILE = ".hydra", ".lock"


@contextlib.contextmanager
def _unless_in_use(run_dir: Path):
    """Yield True, holding the folder's lock when it has one, or False when another process holds it."""
    lock = run_dir / LOCK_FILE
    if fcntl is None or not lock.is_file():
        yield True
        return
    with open(lock, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another training holds the folder: its files are not ours to remove
            yield False
            return
        yield True


def remove_if_empty(run_dir: Path, log_name: str) -> bool:
    """Remove `run_dir` if it holds nothing but Hydra's files, the lock file and the job's log (whose lines were
    also printed on the console), and no other process holds it; True if removed."""
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {HYDRA_DIR, LOCK_FILE, log_name}:
        return False
    with _unless_in_use(run_dir) as free:
        if not free:
            return False
        shutil.rmtree(run_dir / HYDRA_DIR, ignore_errors=True)
        for name in (log_name, LOCK_FILE):
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
