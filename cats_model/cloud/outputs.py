"""The outputs volume read from this machine through Modal's Volume API: no container, no image build.

Run folders as training leaves them (cats_model.run_layout); paths are relative to the volume's root.
"""

import contextlib
import json
from pathlib import PurePosixPath

from cats_model.cloud.settings import load_settings
from cats_model.errors import UserError
from cats_model.run_layout import (
    CHECKPOINT_DIR,
    HYDRA_DIR,
    METRICS_FILE,
    RECORD_FILE,
    RUN_NAME,
    RUN_NAME_RULE,
    RUNS_DIR,
    VOLUME_ROOT,
    run_dir,
    sweep_job,
)


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


def run_files(volume, run_name: str) -> dict[str, bytes]:
    """A finished run's files worth having on a laptop, by path in the run folder: its metrics, the config, the
    best checkpoint, the plots and the training log."""
    if not RUN_NAME.fullmatch(run_name):
        raise UserError(f"run name {run_name!r} must be {RUN_NAME_RULE}")
    folder = str(run_dir(VOLUME_ROOT, run_name))
    present = {PurePosixPath(path).relative_to(folder).as_posix() for path in volume_files(volume, folder)}
    if METRICS_FILE not in present:
        raise UserError(
            f"run {run_name} has no {METRICS_FILE} on the outputs volume (unknown, running or failed)"
        )
    metrics = json.loads(read(volume, f"{folder}/{METRICS_FILE}"))
    wanted = {
        METRICS_FILE,
        "csv/metrics.csv",
        *(p for p in present if p.startswith(f"{HYDRA_DIR}/") and p.endswith(".yaml")),
    }
    # The metrics hold the paths of the container that wrote them: the run's layout places the files by name.
    if metrics.get("best_model_path"):
        wanted.add(f"{CHECKPOINT_DIR}/{PurePosixPath(metrics['best_model_path']).name}")
    wanted |= {PurePosixPath(plot).name for plot in (metrics.get("plots") or {}).values()}
    return {path: read(volume, f"{folder}/{path}") for path in sorted(wanted & present)}


def sweep_rows(volume, sweep: str) -> list[dict]:
    """The rows of a sweep's table, from the records and metrics its jobs' runs keep on the volume."""
    from cats_model.cloud.sweep_summary import volume_rows

    settings = load_settings()
    files = {p.removeprefix(f"{RUNS_DIR}/"): p for p in volume_files(volume, RUNS_DIR) if p.count("/") == 2}

    def wanted(path: str) -> bool:  # <run of the sweep>/<its record or metrics>
        run, _, name = path.partition("/")
        return sweep_job(sweep, run) is not None and name in (RECORD_FILE, METRICS_FILE)

    def cost(record: dict) -> float | None:
        return settings.cost(record["container_s"], record["gpu"]) if record.get("container_s") else None

    return volume_rows({path: read(volume, files[path]) for path in files if wanted(path)}, sweep, cost)
