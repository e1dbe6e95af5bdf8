"""Which run of the outputs volume a deployment serves (launch/serve_app.py): a run by name, or the latest finished.

Decided twice on purpose: where `modal deploy` runs, from the volume read through Modal's API (a run that is not
there fails in one line before anything is deployed, and `latest` becomes a fixed name), then in the container,
which finds that run's best checkpoint under its outputs mount.
"""

from pathlib import Path, PurePosixPath

from cats_model.cloud import remote
from cats_model.cloud.outputs import volume_files
from cats_model.errors import UserError
from cats_model.run_layout import (
    CHECKPOINT_SUFFIX,
    METRICS_FILE,
    RUN_NAME,
    RUNS_DIR,
    VOLUME_ROOT,
    best_checkpoint,
    checkpoint_dir,
    metrics_file,
    run_dir,
)

LATEST = "latest"


def checked_run(run: str) -> str:
    """A run name or "latest", checked where `modal deploy` runs: a typo fails before anything is deployed."""
    if run != LATEST and not RUN_NAME.fullmatch(run):
        raise UserError(f"serve run {run!r} is not {LATEST!r} or a run name (letters, digits, '.', '_', '-')")
    return run


def served_run(run: str, volume, volume_name: str) -> str:
    """The run a deployment serves, read from the volume where `modal deploy` runs: `run`, or for "latest" the
    run whose metrics were written last, refused in one line unless its folder on the volume holds a checkpoint
    (every container would fail to start)."""
    files = volume_files(volume, RUNS_DIR)
    if run == LATEST:
        runs = VOLUME_ROOT / RUNS_DIR
        finished = sorted(
            (entry.mtime, path.parent.name)
            for path, entry in ((PurePosixPath(p), entry) for p, entry in files.items())
            if path.name == METRICS_FILE and path.parent.parent == runs
        )
        if not finished:
            raise UserError(
                f"no finished run on the outputs volume {volume_name} (none has "
                f"{metrics_file(run_dir(VOLUME_ROOT, 'NAME'))}): train one first, or name a run with serve.run in "
                "modal.yml or CATS_MODEL_SERVE_RUN"
            )
        run = finished[-1][1]
    checkpoints = checkpoint_dir(run_dir(VOLUME_ROOT, run))
    if not any(PurePosixPath(p).parent == checkpoints and p.endswith(CHECKPOINT_SUFFIX) for p in files):
        raise UserError(
            f"serve run {run!r} has no checkpoint on the outputs volume {volume_name} ({checkpoints}/); "
            f"`modal volume ls {volume_name} {RUNS_DIR}/` lists the runs"
        )
    return run


def latest_finished_run() -> str:
    """In the container: the run under the outputs mount whose metrics were written last."""
    runs = remote.output_dir() / RUNS_DIR
    finished = sorted((m.stat().st_mtime, m.parent.name) for m in runs.glob(f"*/{METRICS_FILE}"))
    if not finished:
        raise UserError(
            f"no finished run under {runs} (none has {METRICS_FILE}): train one first, "
            "or name a run with serve.run in modal.yml or CATS_MODEL_SERVE_RUN"
        )
    return finished[-1][1]


def served_checkpoint(run: str) -> Path:
    """In the container: the checkpoint to serve for `run` (a run name or "latest") under the outputs mount."""
    folder = remote.run_dir(latest_finished_run() if run == LATEST else run)
    checkpoint = best_checkpoint(folder)
    if checkpoint is None:
        raise UserError(f"run folder {folder} holds no checkpoint (in {checkpoint_dir(folder).name}/)")
    return checkpoint
