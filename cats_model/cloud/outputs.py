"""The outputs volume read from this machine through Modal's Volume API: no container, no image build.

`runs/<name>/...` as training leaves it (see cats_model.cloud.remote); paths are relative to the volume's root.
"""

import contextlib
import json
from pathlib import PurePosixPath

from cats_model.cloud.remote import RECORD_FILE, RUN_NAME
from cats_model.cloud.settings import load_settings
from cats_model.errors import UserError

METRICS = "metrics.json"  # written when a run has finished (trained and tested)


@contextlib.contextmanager
def opened(without_modal: str = ""):
    """The outputs volume of modal.yml, looked up with this machine's Modal token; Modal's errors in one line
    (`without_modal`: what the user can do instead when Modal is not set up here)."""
    import modal

    name, _ = load_settings().volume("outputs")
    volume = modal.Volume.from_name(name)
    try:
        volume.hydrate()
    except modal.exception.AuthError as err:
        instead = f", or {without_modal}" if without_modal else ""
        raise UserError(f"Modal is not authenticated: run `modal token new` once{instead}") from err
    except modal.exception.NotFoundError as err:
        raise UserError(
            f"the outputs volume {name} does not exist yet: no run has been started on Modal"
        ) from err
    yield volume


def volume_files(volume, folder: str) -> dict[str, object]:
    """{path: FileEntry} of every file under `folder` on the volume ({} when there is no such folder)."""
    from modal.exception import NotFoundError

    try:
        entries = volume.listdir(folder, recursive=True)
    except NotFoundError:
        return {}
    return {entry.path.lstrip("/"): entry for entry in entries if entry.type.name == "FILE"}


def read(volume, path: str) -> bytes:
    return b"".join(volume.read_file(path))


def served_run(run: str, volume, volume_name: str) -> str:
    """The run a deployment serves: `run`, or the run whose metrics.json was written last for "latest", refused
    in one line unless its folder on the volume holds a checkpoint (every container would fail to start)."""
    runs = volume_files(volume, "runs")
    if run == "latest":
        finished = sorted(
            (entry.mtime, PurePosixPath(path).parent.name)
            for path, entry in runs.items()
            if PurePosixPath(path).name == METRICS and len(PurePosixPath(path).parts) == 3
        )
        if not finished:
            raise UserError(
                f"no finished run on the outputs volume {volume_name} (none has runs/NAME/{METRICS}): train one "
                "first, or name a run with serve.run in modal.yml or CATS_MODEL_SERVE_RUN"
            )
        run = finished[-1][1]
    checkpoints = [p for p in runs if p.startswith(f"runs/{run}/checkpoints/") and p.endswith(".ckpt")]
    if not checkpoints:
        raise UserError(
            f"serve run {run!r} has no checkpoint on the outputs volume {volume_name} (runs/{run}/checkpoints/); "
            f"`modal volume ls {volume_name} runs/` lists the runs"
        )
    return run


def run_files(volume, run_name: str) -> dict[str, bytes]:
    """A finished run's files worth having on a laptop, by path in the run folder: metrics.json, the config, the
    best checkpoint, the plots and the training log."""
    if not RUN_NAME.fullmatch(run_name):
        raise UserError(f"run name {run_name!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    folder = f"runs/{run_name}"
    present = {PurePosixPath(path).relative_to(folder).as_posix() for path in volume_files(volume, folder)}
    if METRICS not in present:
        raise UserError(f"run {run_name} has no {METRICS} on the outputs volume (unknown, running or failed)")
    metrics = json.loads(read(volume, f"{folder}/{METRICS}"))
    wanted = {
        METRICS,
        "csv/metrics.csv",
        *(p for p in present if p.startswith(".hydra/") and p.endswith(".yaml")),
    }
    # metrics.json holds the paths of the container that wrote it: the run's layout places the files by name.
    if metrics.get("best_model_path"):
        wanted.add(f"checkpoints/{PurePosixPath(metrics['best_model_path']).name}")
    wanted |= {PurePosixPath(plot).name for plot in (metrics.get("plots") or {}).values()}
    return {path: read(volume, f"{folder}/{path}") for path in sorted(wanted & present)}


def sweep_rows(volume, sweep: str) -> list[dict]:
    """The rows of a sweep's table, from the records and metrics its jobs' runs keep on the volume."""
    from cats_model.cloud.sweep_summary import volume_rows

    settings = load_settings()
    files = {p.removeprefix("runs/"): p for p in volume_files(volume, "runs") if p.count("/") == 2}
    wanted = [
        p for p in files if p.startswith(f"{sweep}-") and p.endswith((f"/{RECORD_FILE}", f"/{METRICS}"))
    ]

    def cost(record: dict) -> float | None:
        return settings.cost(record["container_s"], record["gpu"]) if record.get("container_s") else None

    return volume_rows({path: read(volume, files[path]) for path in wanted}, sweep, cost)
