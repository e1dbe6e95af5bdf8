"""Which checkpoint of the outputs volume a deployment serves: a run's best, by name or the latest finished."""

import json
from pathlib import Path

from cats_model.cloud import remote
from cats_model.errors import UserError

LATEST = "latest"
METRICS = "metrics.json"  # written when a run has finished (trained and tested)


def latest_finished_run() -> str:
    finished = sorted(
        (m.stat().st_mtime, m.parent.name) for m in (remote.output_dir() / "runs").glob(f"*/{METRICS}")
    )
    if not finished:
        raise UserError(
            f"no finished run under {remote.output_dir() / 'runs'} (none has {METRICS}): train one first, "
            "or name a run with serve.run in modal.yml or CATS_MODEL_SERVE_RUN"
        )
    return finished[-1][1]


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint inside `run_dir`: the one its metrics name, found in this folder wherever the run
    was trained, else the newest best-*.ckpt, else last.ckpt."""
    folder = run_dir / "checkpoints"
    try:
        named = json.loads((run_dir / METRICS).read_text()).get("best_model_path")
    except (OSError, ValueError):
        named = None
    candidates = [folder / Path(named).name] if named else []
    candidates += sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.append(folder / "last.ckpt")
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise UserError(f"run folder {run_dir} holds no checkpoint (checkpoints/best-*.ckpt or last.ckpt)")
    return found


def checked_run(run: str) -> str:
    """A run name or "latest", checked where `modal deploy` runs: a typo fails before anything is deployed."""
    if run != LATEST and not remote.RUN_NAME.fullmatch(run):
        raise UserError(f"serve run {run!r} is not {LATEST!r} or a run name (letters, digits, '.', '_', '-')")
    return run


def served_checkpoint(run: str) -> Path:
    """The checkpoint to serve for `run` (a run name or "latest") under the outputs mount."""
    return best_checkpoint(remote.run_dir(latest_finished_run() if run == LATEST else run))
