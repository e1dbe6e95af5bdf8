"""The names of a run folder and a sweep folder, and the rule for run names: the one place they are decided.

Every layer reads it (training, serving, the Modal side, the launcher plugin), so it imports nothing of the
project. The configs repeat a few of these names (configs/hydra/default.yaml, configs/paths/default.yaml,
configs/callbacks/*_checkpoint.yaml); tests/test_configs.py holds them against this file.

    <outputs root>/runs/<run name>/     outputs/ here, the outputs volume on Modal
        .hydra/config.yaml, overrides.yaml   Hydra's copy of the run's config, written before it starts
        .lock                         held by the one training that uses the folder
        checkpoints/last.ckpt         after every epoch: what a resumed or preempted run continues from
        checkpoints/last-previous.ckpt  the one it replaced, resumed from when the last one is damaged
        checkpoints/best-*.ckpt       the best epoch by validation accuracy: tested, served, fetched
        metrics.json                  written when the run has finished (trained and tested)
        launch.json                   on Modal: the run's latest call (id, overrides, GPU, status, seconds)
        calls/<call id>.json          on Modal: the call that continues a call stopped at its deadline

    <outputs root>/sweeps/<time>/       a sweep on this machine (Hydra's sweep folder)
        multirun.yaml                 Hydra's, written before any job starts
        <job number>/                 a job's folder: .hydra/ and, once it finished, metrics.json
        summary.csv, summary.json     the sweep's table
"""

import hashlib
import json
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path, PurePath, PurePosixPath

# A run
RUNS_DIR = "runs"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
LAST_CHECKPOINT = "last" + CHECKPOINT_SUFFIX
PREVIOUS_SUFFIX = "-previous"  # <name>-previous.ckpt: the checkpoint written before <name>.ckpt
BEST_PREFIX = "best-"
DAMAGED_SUFFIX = ".damaged"  # a last checkpoint that could not be resumed from, kept for a look
METRICS_FILE = "metrics.json"
RECORD_FILE = "launch.json"
HANDOVER_DIR = "calls"
HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
LOCK_FILE = ".lock"

# A sweep
SWEEPS_DIR = "sweeps"
SWEEP_HYDRA_FILES = frozenset({"multirun.yaml"})
SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"

# A run's name is one folder name, locally and on Modal: never a path out of runs/ (`../../elsewhere/x`).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RUN_NAME_RULE = "letters, digits, '.', '_' or '-' (at most 100)"
VOLUME_ROOT = PurePosixPath()  # the outputs volume's root as Modal's Volume API names paths: runs/<name>/...


def fresh_run_name() -> str:
    """The name of a run started without one: its start time, readable and sortable, and a random tag, so that
    a run started in the same second elsewhere (another terminal, another user of the volume) never lands in
    this one's folder and resumes it."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def call_run_name(call_id: str) -> str:
    """The run of a Modal train call given no name: named by the call, so that Modal's retry of the same call
    (same id) resumes the same folder, where a fresh name would start over."""
    return f"call-{call_id[-12:]}"


def sweep_name(sweep_dir: Path) -> str:
    """A sweep's name, from its folder: distinct per folder, the same when that sweep (same hydra.sweep.dir) runs
    again, so that its jobs' runs resume."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "-", sweep_dir.name)[-48:].strip("-.") or "sweep"
    return f"{tag}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"


def sweep_run_name(sweep: str, job: int) -> str:
    """The run of a sweep's job, named by the sweep and the job's number: a rerun of the sweep resumes it."""
    return f"{sweep}-{job}"


def sweep_job(sweep: str, run_name: str) -> int | None:
    """The job number of `run_name` if it is a run of `sweep`, else None."""
    match = re.fullmatch(re.escape(sweep) + r"-(\d+)", run_name)
    return int(match[1]) if match else None


def run_dir(outputs_root: PurePath, run_name: str) -> PurePath:
    """`<outputs root>/runs/<run name>`: a Path for a folder here, a path on the volume from VOLUME_ROOT."""
    return outputs_root / RUNS_DIR / run_name


def checkpoint_dir(run: PurePath) -> PurePath:
    return run / CHECKPOINT_DIR


def last_checkpoint(run: PurePath) -> PurePath:
    return checkpoint_dir(run) / LAST_CHECKPOINT


def previous_checkpoint(path: str | PurePath) -> Path:
    """Where the checkpoint written before `path` is kept (`<name>-previous.ckpt` beside `<name>.ckpt`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


def metrics_file(run: PurePath) -> PurePath:
    return run / METRICS_FILE


def hydra_file(run: PurePath, name: str = CONFIG_FILE) -> PurePath:
    return run / HYDRA_DIR / name


def handover_file(run: PurePath, call_id: str) -> PurePath:
    return run / HANDOVER_DIR / f"{call_id}.json"


def run_of_checkpoint(checkpoint: Path) -> Path:
    """The run folder a checkpoint of it lies in (`<run>/checkpoints/<name>.ckpt`)."""
    return checkpoint.resolve().parent.parent


def best_checkpoint(run: Path) -> Path | None:
    """The checkpoint to use of a run folder: the best one its metrics name, found in this folder wherever the
    run was trained (the metrics hold the trainer's paths), else the newest best one, else the last one; None
    when it holds none."""
    folder = checkpoint_dir(run)
    try:
        named = json.loads(metrics_file(run).read_text()).get("best_model_path")
    except (OSError, ValueError):
        named = None
    candidates = [folder / Path(named).name] if named else []
    best = (p for p in folder.glob(f"{BEST_PREFIX}*{CHECKPOINT_SUFFIX}") if p.is_file())
    candidates += sorted(best, key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.append(folder / LAST_CHECKPOINT)
    return next((path for path in candidates if path.is_file()), None)
