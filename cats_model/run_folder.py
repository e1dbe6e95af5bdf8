"""A run folder's life across processes: one training at a time, resume from the newest good checkpoint,
`resume=false` that moves the earlier checkpoints aside instead of deleting or mixing them, and no empty folder
left by a run that failed to start."""

import contextlib
import logging
import os
import shutil
import socket
import stat
import time
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from cats_model.checkpoint import resume_problem
from cats_model.errors import UserError
from cats_model.run_layout import DAMAGED_SUFFIX, HYDRA_DIR, LOCK_FILE, previous_checkpoint

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

log = logging.getLogger(__name__)


def _try_lock(file) -> bool:
    """Take the OS lock on the open `file` without waiting; False when another process holds it."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_lock(path: Path):
    """The lock file, created if absent, opened to read and write; never through a symbolic link (the pid and
    host would overwrite whatever it names) and never anything but a regular file: one line instead."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:  # ELOOP: a symbolic link; EISDIR: a folder
        raise UserError(
            f"{path} is {'a symbolic link' if path.is_symlink() else 'not a regular file'} ({err.strerror}): it "
            "should be this project's lock file; remove it, then run again"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device
        os.close(fd)
        raise UserError(
            f"{path} is not a regular file: it should be this project's lock file; remove it, then run again"
        )
    return os.fdopen(fd, "r+")


@contextlib.contextmanager
def hold(folder: Path):
    """Use `folder` alone while the block runs, or raise a UserError naming the process that uses it.

    An OS lock on the folder's lock file: the kernel releases it when the holder ends in any way (SIGKILL and
    preemption included), so it is never stale. The other ranks of a multi-GPU run, relaunched by Lightning
    into the same folder, do not take it."""
    if fcntl is None or rank_zero_only.rank != 0:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with _open_lock(folder / LOCK_FILE) as file:
        try:
            locked = _try_lock(file)
        except OSError as err:  # a filesystem without locks
            log.warning("cannot lock %s (%s): make sure no other training uses it", folder, err)
            locked = True
        if not locked:
            file.seek(0)
            holder = file.read().strip() or "a process that has not said which"
            raise UserError(
                f"{folder} is in use by another training ({holder}): wait for it to end, or train in another "
                f"folder (run_name=... or hydra.run.dir=...)"
            )
        file.seek(0)
        file.truncate(0)
        file.write(
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        file.flush()
        yield  # closing the file releases the lock


def set_aside_checkpoints(checkpoint_dir: Path) -> Path | None:
    """Start over: move the earlier checkpoints to `checkpoints.old-<time>/` beside the folder, never delete."""
    if rank_zero_only.rank != 0 or not checkpoint_dir.is_dir() or not any(checkpoint_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = checkpoint_dir.with_name(f"{checkpoint_dir.name}.old-{stamp}")
    for n in range(2, 1000):
        if not aside.exists():
            break
        aside = checkpoint_dir.with_name(f"{checkpoint_dir.name}.old-{stamp}-{n}")
    checkpoint_dir.rename(aside)
    log.warning("resume=false: the earlier checkpoints were moved to %s", aside)
    return aside


def remove_unfinished_writes(checkpoint_dir: Path) -> None:
    """Temporary files of checkpoint writes cut short by a kill: the checkpoints they were to replace are intact."""
    for leftover in checkpoint_dir.glob(".*.tmp"):
        leftover.unlink()


def checkpoint_to_resume(last: Path) -> Path | None:
    """The checkpoint to resume from: `last`, or when it is damaged or missing, the one written before it
    (with a warning; the damaged file is set aside as `<name>.damaged`); None when there is neither."""
    previous = previous_checkpoint(last)
    problems, chosen = {}, None  # problems: {path: what is wrong with it}
    for path in (path for path in (last, previous) if path.is_file()):
        problems[path] = resume_problem(path)
        if problems[path] is None:
            chosen = path
            break
    if chosen is None and problems:
        raise UserError(
            f"cannot resume: {'; '.join(f'{path} is {problem}' for path, problem in problems.items())}; move "
            f"them away, or start over with resume=false (which keeps the old checkpoints in "
            f"{last.parent.name}.old-<time>/)"
        )
    if chosen == previous:
        why = f"{last} is {problems[last]}" if last in problems else f"{last} is missing"
        if last.is_file() and rank_zero_only.rank == 0:  # kept for a look, never resumed from again
            last.rename(last.with_name(last.name + DAMAGED_SUFFIX))
        log.warning("%s: resuming from %s, one epoch earlier", why, previous)
    return chosen


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
def _unless_in_use(run_dir: Path):
    """Yield True, holding the folder's lock when it has one, or False when another process holds it."""
    lock = run_dir / LOCK_FILE
    if fcntl is None or not lock.is_file():
        yield True
        return
    with open(lock, "a") as file:
        try:
            free = _try_lock(file)
        except OSError:  # a filesystem without locks: nothing tells whether another training is starting
            free = False
        yield free


@contextlib.contextmanager
def removed_if_failed_empty(run_dir: str | Path, log_name: str):
    """A run that fails before writing anything of its own leaves no folder behind: Hydra creates the folder,
    with its config copy and the job's log, before the task starts."""
    try:
        yield
    except BaseException:
        remove_if_empty(Path(run_dir), log_name)
        raise
